-- First-pass yield over time: first_pass_yield.sql per interval of {bucket_s} seconds, each job
-- counted in the interval of its first verdict (bucket: the interval's start, epoch seconds).
SELECT toUnixTimestamp(toStartOfInterval(at, INTERVAL {bucket_s:UInt32} SECOND)) AS bucket,
       uniqExact(job_id) AS scored,
       uniqExactIf(job_id, NOT is_rejected_verdict) AS first_pass,
       if(scored = 0, 0, first_pass / scored) AS first_pass_yield
FROM {database:Identifier}.pipeline_events FINAL
WHERE is_verdict
  AND attempt = 0
  AND at >= fromUnixTimestamp64Milli({since_ms:Int64})
GROUP BY bucket
ORDER BY bucket
