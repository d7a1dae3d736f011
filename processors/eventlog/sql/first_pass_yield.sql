-- First-pass yield: of the jobs the quality gate scored on their first attempt (attempt 0), the
-- share that passed it then, with no retry and no human review needed (is_verdict and
-- is_rejected_verdict: the events table's columns for these rules, job_facts.py EVENT_FLAGS).
SELECT uniqExact(job_id) AS scored,
       uniqExactIf(job_id, NOT is_rejected_verdict) AS first_pass,
       if(scored = 0, 0, first_pass / scored) AS first_pass_yield
FROM {database:Identifier}.pipeline_events FINAL
WHERE is_verdict
  AND attempt = 0
  AND at >= fromUnixTimestamp64Milli({since_ms:Int64})
