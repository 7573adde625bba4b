-- The destination table, with the constraints a real app database has.
DROP TABLE IF EXISTS public.customers_synced;
CREATE TABLE public.customers_synced (
    customer_id     BIGINT PRIMARY KEY,
    email           TEXT NOT NULL CHECK (email LIKE '%@%'),
    first_name      TEXT NOT NULL,
    plan            TEXT NOT NULL,
    lifetime_value  NUMERIC(12, 2)
);
