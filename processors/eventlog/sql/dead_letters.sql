-- Dead letters by stage and error class: how many messages each stage sent to the dead-letter
-- topic since {since_ms}, by the error class it recorded (the event's reason), with the first
-- and the last of them (epoch ms).
SELECT stage,
       reason AS error_class,
       count() AS letters,
       toUnixTimestamp64Milli(min(at)) AS oldest_ms,
       toUnixTimestamp64Milli(max(at)) AS newest_ms
FROM {database:Identifier}.pipeline_events FINAL
WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND state = 'dead_lettered'
GROUP BY stage, error_class
ORDER BY letters DESC, stage, error_class
