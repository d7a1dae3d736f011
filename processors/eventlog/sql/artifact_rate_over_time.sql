-- Artifact rate over time: artifact_rate.sql per interval of {bucket_s} seconds (bucket: the
-- interval's start, epoch seconds).
SELECT toUnixTimestamp(toStartOfInterval(at, INTERVAL {bucket_s:UInt32} SECOND)) AS bucket,
       count() AS verdicts,
       countIf(is_rejected_verdict) AS rejected,
       if(verdicts = 0, 0, rejected / verdicts) AS artifact_rate
FROM {database:Identifier}.pipeline_events FINAL
WHERE is_verdict
  AND at >= fromUnixTimestamp64Milli({since_ms:Int64})
GROUP BY bucket
ORDER BY bucket
