-- Credits by account: per credit account, the credits intake reserved for jobs it accepted in
-- the window, and of those what the jobs' terminal events consumed (published) and released
-- (failed, rejected, dead-lettered). Each job counts once, at its reservation's amount: consumed
-- if it was ever published (consumption is final: processors/credits/settlement.py), else
-- released if a release was recorded, else still outstanding (reserved - consumed - released).
SELECT account,
       sum(amount) AS reserved,
       sumIf(amount, was_consumed) AS consumed,
       sumIf(amount, was_released AND NOT was_consumed) AS released
FROM (
    SELECT job_id,
           anyIf(attributes['account'], state = 'credit_reserved') AS account,
           maxIf(toFloat64OrZero(attributes['amount']), state = 'credit_reserved') AS amount,
           countIf(state = 'credit_consumed') > 0 AS was_consumed,
           countIf(state = 'credit_released') > 0 AS was_released
    FROM {database:Identifier}.pipeline_events FINAL
    WHERE state IN ('credit_reserved', 'credit_consumed', 'credit_released')
    GROUP BY job_id
    HAVING countIf(state = 'credit_reserved' AND at >= fromUnixTimestamp64Milli({since_ms:Int64})) > 0
)
GROUP BY account
ORDER BY account
