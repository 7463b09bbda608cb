-- Roles Meridian needs, created once on the primary (the replicas receive them by replication):
--   sudo -u postgres psql -f roles.sql
-- Then give each role a password with psql's \password (it sends a SCRAM verifier, never the password).
-- See docs/deploy.md.

-- Replication: pg_basebackup and the replicas' WAL receivers log in as replicator.
CREATE ROLE replicator WITH LOGIN REPLICATION;

-- The proxies poll every server (pg_is_in_recovery(), WAL positions) and read the catalog lists of
-- volatile functions and views as meridian_monitor (monitor_user).
CREATE ROLE meridian_monitor WITH LOGIN;
GRANT pg_monitor TO meridian_monitor;

-- The proxies look up application users' SCRAM verifiers as meridian_auth (auth.query_user), through
-- this function only: it can read pg_authid (SECURITY DEFINER), the auth user cannot. Superusers and
-- replication roles are never returned, so they cannot log in through a proxy.
CREATE ROLE meridian_auth WITH LOGIN;
CREATE SCHEMA meridian;
REVOKE ALL ON SCHEMA meridian FROM PUBLIC;
GRANT USAGE ON SCHEMA meridian TO meridian_auth;
CREATE FUNCTION meridian.user_secret(username text) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog
AS $$
    SELECT rolpassword FROM pg_authid
    WHERE rolname = username AND rolcanlogin AND NOT rolsuper AND NOT rolreplication
      AND (rolvaliduntil IS NULL OR rolvaliduntil > now())
$$;
REVOKE ALL ON FUNCTION meridian.user_secret(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION meridian.user_secret(text) TO meridian_auth;

-- The application: a login role and its database.
CREATE ROLE shop WITH LOGIN;
CREATE DATABASE shop OWNER shop;
