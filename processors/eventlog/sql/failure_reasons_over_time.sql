-- Failure reasons over time: per interval of {bucket_s} seconds, how often each reason was
-- recorded on a failure, a reviewer's or intake's rejection, a retry, a dropped reference, a
-- dead letter or a failed notification (bucket: the interval's start, epoch seconds).
SELECT toUnixTimestamp(toStartOfInterval(at, INTERVAL {bucket_s:UInt32} SECOND)) AS bucket,
       reason,
       count() AS events
FROM {database:Identifier}.pipeline_events FINAL
WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND reason != ''
  AND state IN ('failed', 'retry', 'rejected', 'rejected_event', 'dropped_reference',
                'dead_lettered', 'notify_failed')
GROUP BY bucket, reason
ORDER BY bucket, reason
