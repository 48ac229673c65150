-- Run once per PostgreSQL server, as a role that may create roles (e.g. the managed server's admin).
-- The embedded development server does the same by itself (nectar/shared/embedded_postgres.py).
-- Replace each CHANGE_ME; keep the passwords in the services' environment files only.
CREATE ROLE nectar_owner     LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD 'CHANGE_ME';
CREATE ROLE nectar_app_user  LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD 'CHANGE_ME';
CREATE ROLE nectar_marketing LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD 'CHANGE_ME';
-- BYPASSRLS: admin reads across tenants. (On some managed servers only the provider's admin may grant it.)
CREATE ROLE nectar_admin     LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS   PASSWORD 'CHANGE_ME';
CREATE DATABASE nectarstudio_ai OWNER nectar_owner;
-- Everything else (connect and schema grants, table grants, row-level security) is in the migrations.
