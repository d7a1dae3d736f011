-- Compute used: what the generations recorded since {since_ms} used, per backend, one row per
-- {by} ('' for all, 'model', 'backend', 'template' or 'campaign': the job's, from job_latest)
-- and backend: generations, images generated, GPU and CPU seconds of the backend's own compute,
-- remote API calls. `lightbox metrics` prices them with `costs` in configuration.
SELECT multiIf({by:String} = 'model', e.attributes['model'],
               {by:String} = 'backend', e.attributes['backend'],
               {by:String} = 'template', j.template,
               {by:String} = 'campaign', j.campaign,
               '') AS group_key,
       e.attributes['backend'] AS backend,
       count() AS generations,
       sum(e.variants) AS images,
       sum(toFloat64OrZero(e.attributes['gpu_ms'])) / 1000 AS gpu_seconds,
       sum(toFloat64OrZero(e.attributes['cpu_ms'])) / 1000 AS cpu_seconds,
       sum(toUInt32OrZero(e.attributes['api_calls'])) AS api_calls
FROM {database:Identifier}.pipeline_events AS e FINAL
LEFT JOIN (
    -- only read when grouping by a job's template or campaign: the LIMIT, not the WHERE, is what
    -- keeps the engine from reading the view for a join that uses none of it
    SELECT job_id, template, campaign
    FROM {database:Identifier}.job_latest
    WHERE {by:String} IN ('template', 'campaign')
    LIMIT if({by:String} IN ('template', 'campaign'), 18446744073709551615, 0)
) AS j ON e.job_id = j.job_id
-- PREWHERE runs before FINAL's deduplication, so only generations' attributes are read. That
-- is exact because is_generation tests only stage and state, which are part of an event's id
-- (processors/runtime/outbox.py event_id): every copy of an event passes or fails together.
-- `at` differs between copies (the earliest wins), so it is tested after FINAL, in WHERE.
PREWHERE e.is_generation
WHERE e.at >= fromUnixTimestamp64Milli({since_ms:Int64})
GROUP BY group_key, backend
ORDER BY group_key, backend
