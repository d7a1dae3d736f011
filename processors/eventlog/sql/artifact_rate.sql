-- Artifact rate: of the quality gate's verdicts, the share it rejected (blank, wrong size,
-- product lost...). A verdict is one quality event that scored an attempt: passed ("completed"),
-- sent back for another attempt ("retry"), or failed for its quality ("quality_rejection").
-- A rejected verdict sent on to human review is flagged needs_review.
SELECT count() AS verdicts,
       countIf(state = 'retry' OR reason = 'quality_rejection' OR attributes['needs_review'] = 'true')
           AS rejected,
       if(verdicts = 0, 0, rejected / verdicts) AS artifact_rate
FROM {database:Identifier}.pipeline_events FINAL
WHERE stage = 'quality'
  AND at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND (state IN ('completed', 'retry') OR (state = 'failed' AND reason = 'quality_rejection'))
