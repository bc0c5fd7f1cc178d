-- Roles and database for Vigil. Run once per cluster by a superuser:
--   psql -v db=vigil -f migrations/bootstrap.sql
-- vigil_owner owns the schema and runs migrations; vigil_app serves requests and
-- workers; vigil_relay reads and marks the outbox. Neither of the last two owns a table
-- or bypasses row-level security.
SELECT 'CREATE ROLE vigil_owner LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vigil_owner') \gexec
SELECT 'CREATE ROLE vigil_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vigil_app') \gexec
SELECT 'CREATE ROLE vigil_relay LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vigil_relay') \gexec
SELECT format('CREATE DATABASE %I OWNER vigil_owner', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO vigil_app, vigil_relay', :'db') \gexec
