-- p95 handler time per stage over time: stage_time.sql's p95_ms per stage and interval of
-- {bucket_s} seconds (bucket: the interval's start, epoch seconds).
SELECT toUnixTimestamp(toStartOfInterval(at, INTERVAL {bucket_s:UInt32} SECOND)) AS bucket,
       stage,
       count() AS events,
       quantileExact(0.95)(duration_ms) AS p95_ms
FROM {database:Identifier}.pipeline_events FINAL
WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND state NOT IN {ledger:Array(String)}  -- credit settlements: the account's, not the stage's work
GROUP BY bucket, stage
ORDER BY bucket, stage
