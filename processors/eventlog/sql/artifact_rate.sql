-- Artifact rate: of the quality gate's verdicts, the share it rejected (blank, wrong size,
-- product lost...). A verdict is one quality event that scored an attempt: passed ("completed"),
-- sent back for another attempt ("retry"), or failed for its quality ("quality_rejection").
-- A rejected verdict sent on to human review is flagged needs_review. is_verdict and
-- is_rejected_verdict are the events table's columns for these rules (job_facts.py EVENT_FLAGS).
SELECT count() AS verdicts,
       countIf(is_rejected_verdict) AS rejected,
       if(verdicts = 0, 0, rejected / verdicts) AS artifact_rate
FROM {database:Identifier}.pipeline_events FINAL
WHERE is_verdict
  AND at >= fromUnixTimestamp64Milli({since_ms:Int64})
