-- Customers worth syncing: everyone who has not churned.
SELECT id,
       lower(email)        AS email,
       first_name,
       plan,
       round(ltv, 2)       AS ltv
FROM analytics.customers
WHERE NOT churned
