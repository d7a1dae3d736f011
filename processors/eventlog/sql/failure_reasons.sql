-- Reasons recorded: the commonest machine-readable reasons (failures, rejections, retries,
-- drops, dead letters, review flags), by the stage and state that recorded them.
SELECT stage, state, reason, count() AS events
FROM {database:Identifier}.pipeline_events FINAL
WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND reason != ''
  -- a credit settlement repeats its job's reason: the reason is counted where it happened
  AND state NOT IN {ledger:Array(String)}
GROUP BY stage, state, reason
ORDER BY events DESC, stage, state, reason
LIMIT 20
