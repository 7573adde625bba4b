-- The demo warehouse of seed.sql, in MariaDB: 12,000 customers, some of them
-- invalid on purpose (scripts/quickstart.sh --mysql).
DROP DATABASE IF EXISTS ebb_demo_analytics;
CREATE DATABASE ebb_demo_analytics CHARACTER SET utf8mb4;
USE ebb_demo_analytics;
CREATE TABLE customers (
    id          BIGINT,
    email       TEXT,
    first_name  TEXT,
    plan        TEXT,
    ltv         DECIMAL(12, 4),
    churned     BOOLEAN NOT NULL DEFAULT false
);
-- MariaDB stops recursive queries at 1,000 iterations unless told more.
SET SESSION max_recursive_iterations = 20000;
INSERT INTO customers (id, email, first_name, plan, ltv, churned)
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 12000)
SELECT n,
       CASE WHEN n % 397 = 0 THEN CONCAT('not-an-email-', n)          -- rejected by the replica's CHECK
            ELSE CONCAT(ELT(1 + n % 8, 'ada','grace','alan','edsger','barbara','ken','linus','margaret'),
                        '.', n, '@', ELT(1 + n % 3, 'example.com','acme.io','globex.net')) END,
       CASE WHEN n % 911 = 0 THEN NULL                                 -- rejected: first_name is NOT NULL there
            ELSE ELT(1 + n % 8, 'Ada','Grace','Alan','Edsger','Barbara','Ken','Linus','Margaret') END,
       ELT(1 + (n * 7) % 4, 'free','starter','pro','enterprise'),
       ROUND(RAND() * 5000, 4),
       n % 6 = 0
FROM g;
-- Two rows share a primary key, one has none: the planner rejects them.
INSERT INTO customers (id, email, first_name, plan, ltv) VALUES
    (5, 'duplicate.5@example.com', 'Dupe', 'pro', 10),
    (NULL, 'no.key@example.com', 'Nokey', 'free', 1);
