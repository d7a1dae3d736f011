-- First-pass yield: of the jobs the quality gate scored on their first attempt (attempt 0), the
-- share that passed it then, with no retry and no human review needed.
SELECT uniqExact(job_id) AS scored,
       uniqExactIf(job_id, state = 'completed' AND attributes['needs_review'] != 'true') AS first_pass,
       if(scored = 0, 0, first_pass / scored) AS first_pass_yield
FROM {database:Identifier}.pipeline_events FINAL
WHERE stage = 'quality'
  AND attempt = 0
  AND at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND (state IN ('completed', 'retry') OR (state = 'failed' AND reason = 'quality_rejection'))
