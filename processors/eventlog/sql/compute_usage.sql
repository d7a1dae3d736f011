-- Compute used: what the generations recorded since {since_ms} used, per backend, one row per
-- {by} ('' for all, 'model', 'backend', 'template' or 'campaign': the job's, from job_groups)
-- and backend: generations, images generated, GPU and CPU seconds of the backend's own compute,
-- remote API calls. `lightbox metrics` prices them with `costs` in configuration.
SELECT multiIf({by:String} = 'model', e.model,
               {by:String} = 'backend', e.backend,
               {by:String} IN ('template', 'campaign'), j.group_key,
               '') AS group_key,
       e.backend AS backend,
       count() AS generations,
       sum(e.variants) AS images,
       sum(e.gpu_ms) / 1000 AS gpu_seconds,
       sum(e.cpu_ms) / 1000 AS cpu_seconds,
       sum(e.api_calls) AS api_calls
-- generate's `running` events, the events table's is_generation rule, copied there as they
-- arrive with their compute as columns (processors/eventlog/generations.py): reading the events
-- themselves decompressed every event's attributes map
FROM {database:Identifier}.generations AS e FINAL
-- Joined on a 64-bit hash of the job id, not the id: a hash table of numbers is cheaper to build
-- and probe than one of strings. Two job ids would have to share a hash (odds of about 1 in 30
-- million over a million jobs) for their generations to be counted twice. (LEFT ANY JOIN, which
-- would rule that out, cost about a fifth more engine CPU.)
LEFT JOIN (
    -- only read when grouping by a job's template or campaign (for any other {by} the filter is a
    -- constant false and the join's side is empty: a LIMIT here would stop the engine reading
    -- only the one branch of job_groups it needs)
    SELECT xxh3(job_id) AS job_key, group_key
    FROM {database:Identifier}.job_groups
    WHERE grouping = {by:String} AND {by:String} IN ('template', 'campaign')
) AS j ON xxh3(e.job_id) = j.job_key
WHERE e.at >= fromUnixTimestamp64Milli({since_ms:Int64})
GROUP BY group_key, backend
ORDER BY group_key, backend
