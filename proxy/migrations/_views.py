"""The SQL view `user_summary` over `requests`, as each migration leaves it.

A migration that alters a column of `requests` fails while the view exists (SQLite: "error
in view user_summary"; PostgreSQL: "cannot alter type of a column used by a view"): it must
drop the view first and create it again (updated if need be) after its own operations.
"""

DROP_USER_SUMMARY = "DROP VIEW IF EXISTS user_summary"

# As created by 0003, over `tokens_est`.
CREATE_USER_SUMMARY_0003 = """
CREATE VIEW user_summary AS
SELECT
    MIN(id) AS id,
    user_id,
    COUNT(*) AS requests,
    SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,
    SUM(CASE WHEN status = 429 THEN 1 ELSE 0 END) AS rate_limited,
    SUM(tokens_est) AS tokens,
    CAST(AVG(latency_ms) AS DOUBLE PRECISION) AS avg_latency_ms,
    MIN(created_at) AS first_seen,
    MAX(created_at) AS last_seen
FROM requests
GROUP BY user_id
"""

# Since 0004: tokens of the calls whose usage is known, and how many calls have none.
CREATE_USER_SUMMARY = """
CREATE VIEW user_summary AS
SELECT
    MIN(id) AS id,
    user_id,
    COUNT(*) AS requests,
    SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,
    SUM(CASE WHEN status = 429 THEN 1 ELSE 0 END) AS rate_limited,
    COALESCE(SUM(total_tokens), 0) AS tokens,
    SUM(CASE WHEN total_tokens IS NULL THEN 1 ELSE 0 END) AS unknown_usage,
    CAST(AVG(latency_ms) AS DOUBLE PRECISION) AS avg_latency_ms,
    MIN(created_at) AS first_seen,
    MAX(created_at) AS last_seen
FROM requests
GROUP BY user_id
"""
