-- Throughput over time: per interval of {bucket_s} seconds, jobs accepted by intake ("pending"),
-- published, failed, and rejected by a reviewer (bucket: the interval's start, epoch seconds).
SELECT toUnixTimestamp(toStartOfInterval(at, INTERVAL {bucket_s:UInt32} SECOND)) AS bucket,
       countIf(state = 'pending') AS accepted,
       countIf(state = 'published') AS published,
       countIf(state = 'failed') AS failed,
       countIf(state = 'rejected') AS rejected
FROM {database:Identifier}.pipeline_events FINAL
WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND state IN ('pending', 'published', 'failed', 'rejected')
GROUP BY bucket
ORDER BY bucket
