-- A demo warehouse: 12,000 customers, some of them invalid on purpose.
DROP SCHEMA IF EXISTS analytics CASCADE;
CREATE SCHEMA analytics;
CREATE TABLE analytics.customers (
    id          BIGINT,
    email       TEXT,
    first_name  TEXT,
    plan        TEXT,
    ltv         NUMERIC(12, 4),
    churned     BOOLEAN NOT NULL DEFAULT false
);
INSERT INTO analytics.customers (id, email, first_name, plan, ltv, churned)
SELECT g,
       CASE WHEN g % 397 = 0 THEN 'not-an-email-' || g          -- rejected by the replica's CHECK
            ELSE (ARRAY['ada','grace','alan','edsger','barbara','ken','linus','margaret'])[1 + g % 8]
                 || '.' || g || '@' || (ARRAY['example.com','acme.io','globex.net'])[1 + g % 3] END,
       CASE WHEN g % 911 = 0 THEN NULL                           -- rejected: first_name is NOT NULL there
            ELSE initcap((ARRAY['ada','grace','alan','edsger','barbara','ken','linus','margaret'])[1 + g % 8]) END,
       (ARRAY['free','starter','pro','enterprise'])[1 + (g * 7) % 4],
       round((random() * 5000)::numeric, 4),
       g % 6 = 0
FROM generate_series(1, 12000) AS g;
-- Two rows share a primary key, one has none: the planner rejects them.
INSERT INTO analytics.customers (id, email, first_name, plan, ltv) VALUES
    (5, 'duplicate.5@example.com', 'Dupe', 'pro', 10),
    (NULL, 'no.key@example.com', 'Nokey', 'free', 1);
