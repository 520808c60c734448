-- 003: Team Cymru's answers, cached in the inventory, and the Cymru state of each address.
-- The cache is written in the same transaction as the addresses it answered.

-- Origin answers by the prefix the service returned: an address inside a fresh prefix needs no
-- query. asn_number is the pick among the origin ASNs (the lowest), asns all of them; both NULL
-- when the service names none (NA).
CREATE TABLE cymru_prefixes (
    prefix       text PRIMARY KEY,
    ip_version   smallint NOT NULL CHECK (ip_version IN (4, 6)),
    asn_number   bigint,
    asns         text,
    country_code text,
    rir_registry text,
    allocated    text,
    query_name   text NOT NULL,
    raw_answer   jsonb NOT NULL,
    fetched_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

-- NXDOMAIN answers (no routed prefix covers the address), by address.
CREATE TABLE cymru_unrouted (
    ip_address text PRIMARY KEY,
    query_name text NOT NULL,
    fetched_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- AS-name answers by ASN; outcome 'nxdomain' (the service knows no such ASN) is cached too.
CREATE TABLE cymru_asn_names (
    asn_number           bigint PRIMARY KEY,
    outcome              text NOT NULL CHECK (outcome IN ('found', 'nxdomain')),
    organization_name    text,
    organization_country text,
    rir_registry         text,
    allocated            text,
    query_name           text NOT NULL,
    raw_answer           jsonb,
    fetched_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL
);

-- NULL: Cymru not asked (off, covered by MaxMind, a bogon); found; unrouted (NXDOMAIN);
-- pending (no usable answer yet: a later run asks again).
ALTER TABLE ip_inventory ADD COLUMN cymru_status text
    CHECK (cymru_status IN ('found', 'unrouted', 'pending'));

-- name_source says where a name came from: an ASN without a name has none (the first releases
-- wrote the source of the lookup there).
UPDATE asn_inventory SET name_source = NULL WHERE organization_name IS NULL;
