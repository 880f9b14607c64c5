-- The state store's statements, one text for SQLite and PostgreSQL (digest/state/connector.py
-- loads them once): `-- name: NAME` starts a statement, `:name` is a parameter (sqlite3 takes
-- it as it is; for psycopg it becomes `%(name)s`). `NAME.postgres` / `NAME.sqlite` is a
-- per-database variant, only where the meaning differs, each saying why in its first line.
-- Filled in at load: {delivery}, {suppression}, {score} (column lists), {allowed} (the WHERE
-- of the transition the statement is named after, from TRANSITIONS in base.py) and {unlease}
-- (PostgreSQL: a marked row's lease ends). `NAME_of` is NAME for one address (its own
-- statement, so that both databases use the index). `x = ANY(:list)` is PostgreSQL's;
-- SQLite gets `x IN (SELECT value FROM json_each(:list))`, the list as one JSON text.

-- deliveries ---------------------------------------------------------------------------------

-- name: get
SELECT {delivery} FROM deliveries WHERE subscriber = :subscriber AND edition = :edition
-- name: claim
INSERT INTO deliveries (subscriber, edition, status, message_id, attempts, created_at,
    updated_at)
VALUES (:subscriber, :edition, 'sending', :message_id, 0, :stamp, :stamp)
ON CONFLICT (subscriber, edition) DO UPDATE
    SET status = 'sending', message_id = excluded.message_id, detail = NULL,
        updated_at = excluded.updated_at
    WHERE {allowed}
-- name: claim.postgres
-- A shared state: the claim records its claimer and a lease (the database's clock).
INSERT INTO deliveries (subscriber, edition, status, message_id, attempts, created_at,
    updated_at, claimed_by, lease_until)
VALUES (:subscriber, :edition, 'sending', :message_id, 0, :stamp, :stamp, :claimer,
    clock_timestamp() + make_interval(secs => :lease))
ON CONFLICT (subscriber, edition) DO UPDATE
    SET status = 'sending', message_id = excluded.message_id, detail = NULL,
        updated_at = excluded.updated_at, claimed_by = excluded.claimed_by,
        lease_until = excluded.lease_until
    WHERE {allowed}
-- name: forget_papers
DELETE FROM delivery_papers WHERE subscriber = :subscriber AND edition = :edition
-- name: add_paper
INSERT INTO delivery_papers (subscriber, edition, arxiv_id)
VALUES (:subscriber, :edition, :arxiv_id) ON CONFLICT DO NOTHING
-- name: mark_sent
INSERT INTO deliveries (subscriber, edition, status, detail, attempts, created_at,
    updated_at, sent_at, last_code, last_error)
VALUES (:subscriber, :edition, 'sent', :detail, :attempts, :stamp, :stamp, :stamp, :code,
    NULL)
ON CONFLICT (subscriber, edition) DO UPDATE
    SET status = 'sent', detail = excluded.detail,
        attempts = deliveries.attempts + excluded.attempts,
        updated_at = excluded.updated_at, sent_at = excluded.sent_at,
        last_code = excluded.last_code{unlease}
    WHERE {allowed}
-- name: mark_failed mark_deferred mark_unknown
INSERT INTO deliveries (subscriber, edition, status, attempts, created_at, updated_at,
    last_code, last_error)
VALUES (:subscriber, :edition, :status, :attempts, :stamp, :stamp, :code, :error)
ON CONFLICT (subscriber, edition) DO UPDATE
    SET status = excluded.status, detail = NULL,
        attempts = deliveries.attempts + excluded.attempts,
        updated_at = excluded.updated_at, last_code = excluded.last_code,
        last_error = excluded.last_error{unlease}
    WHERE {allowed}
-- name: mark_skipped
INSERT INTO deliveries (subscriber, edition, status, detail, attempts, created_at,
    updated_at)
VALUES (:subscriber, :edition, 'skipped', :detail, 0, :stamp, :stamp)
ON CONFLICT (subscriber, edition) DO UPDATE
    SET status = 'skipped', detail = excluded.detail,
        updated_at = excluded.updated_at{unlease}
    WHERE {allowed}
-- name: expire
UPDATE deliveries SET status = 'unknown', updated_at = :stamp,
    last_error = coalesce(last_error, :interrupted)
WHERE {allowed}
RETURNING {delivery}
-- name: expire.postgres
-- A shared state: only rows whose lease ran out belong to a dead process.
UPDATE deliveries SET status = 'unknown', updated_at = :stamp,
    last_error = coalesce(last_error, :interrupted), lease_until = NULL
WHERE {allowed} AND (lease_until IS NULL OR lease_until < clock_timestamp())
RETURNING {delivery}
-- name: reopen
INSERT INTO deliveries (subscriber, edition, status, attempts, created_at, updated_at)
VALUES (:subscriber, :edition, 'owed', 0, :stamp, :stamp)
ON CONFLICT (subscriber, edition) DO UPDATE
    SET status = 'owed', detail = NULL, updated_at = excluded.updated_at{unlease}
    WHERE {allowed}
-- name: statuses
SELECT subscriber, edition, status FROM deliveries WHERE edition = ANY(:editions)
-- name: statuses_of
SELECT subscriber, edition, status FROM deliveries WHERE edition = ANY(:editions)
    AND subscriber = ANY(:subscribers)
-- name: statuses_of.sqlite
-- One process per file reads the edition's rows; picking the subscribers after is faster.
SELECT subscriber, edition, status FROM deliveries WHERE edition = ANY(:editions)
-- name: list
SELECT {delivery} FROM deliveries
-- name: find_message
SELECT {delivery} FROM deliveries WHERE message_id = :message_id
-- name: last_delivery_to
SELECT {delivery} FROM deliveries
WHERE subscriber = :subscriber AND status IN ('sent', 'failed')
ORDER BY coalesce(sent_at, updated_at) DESC LIMIT 1
-- name: sent_editions
-- Editions only: a test send's 'test:…' and a welcome's 'welcome:…' hold a colon.
SELECT edition, min(coalesce(sent_at, updated_at)) FROM deliveries
WHERE status = 'sent' AND edition NOT LIKE '%:%' GROUP BY edition ORDER BY edition DESC
LIMIT :limit
-- name: sent_papers
SELECT dp.subscriber, dp.arxiv_id FROM delivery_papers dp
JOIN deliveries d ON d.subscriber = dp.subscriber AND d.edition = dp.edition
WHERE dp.arxiv_id = ANY(:ids) AND d.status IN ('sent', 'unknown')
    AND (dp.edition != :except_edition OR :except_edition IS NULL)
-- name: delivery_papers
SELECT arxiv_id FROM delivery_papers WHERE subscriber = :subscriber AND edition = :edition
ORDER BY arxiv_id

-- suppressions and bounces -------------------------------------------------------------------

-- name: suppress
INSERT INTO suppressions (address, reason, since, evidence, actor)
VALUES (:address, :reason, :since, :evidence, :actor)
ON CONFLICT (address) WHERE lifted_at IS NULL DO NOTHING
-- name: unsuppress
UPDATE suppressions SET lifted_at = :stamp, lifted_by = :actor
WHERE address = :address AND lifted_at IS NULL
-- name: suppression
SELECT {suppression} FROM suppressions WHERE address = :address AND lifted_at IS NULL
-- name: suppressions
SELECT {suppression} FROM suppressions WHERE lifted_at IS NULL
-- name: suppression_history
SELECT {suppression} FROM suppressions ORDER BY since, id
-- name: suppression_history_of
SELECT {suppression} FROM suppressions WHERE address = :address ORDER BY since, id
-- name: mark_processed
INSERT INTO processed_messages (key, message_id, at, outcome, detail)
VALUES (:key, :message_id, :at, :outcome, :detail) ON CONFLICT (key) DO NOTHING
-- name: add_bounce
INSERT INTO bounces (address, kind, at, edition, message_id, evidence, source, scored)
VALUES (:address, :kind, :at, :edition, :message_id, :evidence, :source, :scored)
-- name: set_score
INSERT INTO bounce_scores (address, hard, soft, last_scored_day, last_bounce_at)
VALUES (:address, :hard, :soft, :last_scored_day, :last_bounce_at)
ON CONFLICT (address) DO UPDATE
    SET hard = excluded.hard, soft = excluded.soft,
        last_scored_day = excluded.last_scored_day, last_bounce_at = excluded.last_bounce_at
-- name: processed
SELECT key, message_id, at, outcome, detail FROM processed_messages WHERE key = :key
-- name: bounce_score
SELECT {score} FROM bounce_scores WHERE address = :address
-- name: bounce_scores
SELECT {score} FROM bounce_scores
-- name: bounce_events
SELECT address, kind, at, edition, message_id, evidence, source, scored FROM bounces
ORDER BY at, id
-- name: bounce_events_of
SELECT address, kind, at, edition, message_id, evidence, source, scored FROM bounces
WHERE address = :address ORDER BY at, id

-- papers and the feed cache ------------------------------------------------------------------

-- name: save_papers
INSERT INTO papers (day, source, fetched_at, payload) VALUES (:day, :source, :stamp, :payload)
ON CONFLICT (day, source) DO UPDATE
    SET fetched_at = excluded.fetched_at, payload = excluded.payload
-- name: load_papers
SELECT payload FROM papers WHERE day = :day AND source = :source
-- name: save_paper
INSERT INTO known_papers (arxiv_id, fetched_at, payload) VALUES (:arxiv_id, :stamp, :payload)
ON CONFLICT (arxiv_id) DO UPDATE
    SET fetched_at = excluded.fetched_at, payload = excluded.payload
-- name: known_papers
SELECT payload FROM known_papers WHERE arxiv_id = ANY(:ids)
-- name: listed_papers
SELECT j.value FROM papers, json_each(papers.payload) AS j
WHERE json_extract(j.value, '$.arxiv_id') = ANY(:ids) ORDER BY papers.day DESC
-- name: listed_papers.postgres
-- PostgreSQL spells "the items of a stored JSON list" with its own functions.
SELECT j.value::text FROM papers, LATERAL json_array_elements(papers.payload::json) AS j
WHERE j.value->>'arxiv_id' = ANY(:ids) ORDER BY papers.day DESC
-- name: cache_get
SELECT etag, last_modified, body FROM feed_cache WHERE url = :url
-- name: cache_put
INSERT INTO feed_cache (url, etag, last_modified, body, fetched_at)
VALUES (:url, :etag, :last_modified, :body, :stamp)
ON CONFLICT (url) DO UPDATE
    SET etag = excluded.etag, last_modified = excluded.last_modified, body = excluded.body,
        fetched_at = excluded.fetched_at

-- events, sign-ups and feedback --------------------------------------------------------------

-- name: record_event
INSERT INTO events (at, actor, action, subscriber, request, detail)
VALUES (:stamp, :actor, :action, :subscriber, :request, :detail)
-- name: events
SELECT id, at, actor, action, subscriber, request, detail FROM events ORDER BY id
-- name: events_of
SELECT id, at, actor, action, subscriber, request, detail FROM events
WHERE subscriber = :subscriber ORDER BY id
-- name: add_signup
INSERT INTO signups (id, address, name, keywords, client, created_at, expires_at)
VALUES (:id, :address, :name, :keywords, :client, :stamp, :expires_at)
-- name: signup
SELECT id, address, name, keywords, client, created_at, expires_at, confirmed_at
FROM signups WHERE id = :id
-- name: confirm_signup
UPDATE signups SET confirmed_at = :stamp WHERE id = :id AND confirmed_at IS NULL
-- name: count_signups
SELECT count(*) FROM signups WHERE created_at >= :since
-- name: signup_addresses
SELECT DISTINCT address FROM signups
-- name: record_feedback
INSERT INTO feedback (subscriber, arxiv_id, verdict, at)
VALUES (:subscriber, :arxiv_id, :verdict, :stamp)
ON CONFLICT (subscriber, arxiv_id) DO UPDATE
    SET verdict = excluded.verdict, at = excluded.at
    WHERE feedback.verdict != excluded.verdict
-- name: feedback
SELECT subscriber, arxiv_id, verdict FROM feedback WHERE subscriber = ANY(:subscribers)
ORDER BY subscriber, at, arxiv_id
-- name: feedback_subscribers
SELECT DISTINCT subscriber FROM feedback ORDER BY subscriber
-- name: forget
INSERT INTO forgotten (subscriber, item, at, actor) VALUES (:subscriber, :item, :at, :actor)
ON CONFLICT (subscriber, item) DO NOTHING
-- name: unforget
DELETE FROM forgotten WHERE subscriber = :subscriber AND item = :item
-- name: forgotten
SELECT subscriber, item FROM forgotten WHERE subscriber = ANY(:subscribers)
-- name: forgotten_all
SELECT subscriber, item FROM forgotten

-- the subscriber list (DIGEST_SUBSCRIBERS=state) ----------------------------------------------

-- name: subscriber_list
SELECT version, removed, entries, head, tail, indent, defaults FROM subscriber_list
WHERE id = 1
-- name: bump_list
INSERT INTO subscriber_list (id, version, removed, entries, head, tail, indent, defaults,
    updated_at)
VALUES (1, 1, 0, :delta, :head, '', :indent, :defaults, :stamp)
ON CONFLICT (id) DO UPDATE
    SET version = subscriber_list.version + 1,
        removed = CASE WHEN excluded.entries < 0 THEN subscriber_list.version + 1
            ELSE subscriber_list.removed END,
        entries = subscriber_list.entries + excluded.entries, updated_at = excluded.updated_at
RETURNING version
-- name: set_list_text
UPDATE subscriber_list SET head = :head, tail = :tail, indent = :indent, defaults = :defaults
WHERE id = 1
-- name: stored_subscriber
SELECT email, position, active, frequency, fields, entry, version FROM subscribers
WHERE email = :email
-- name: lock_subscriber
SELECT email, position, active, frequency, fields, entry, version FROM subscribers
WHERE email = :email
-- name: lock_subscriber.postgres
-- Writers of one row wait for each other (SQLite's write transaction is exclusive already).
SELECT email, position, active, frequency, fields, entry, version FROM subscribers
WHERE email = :email FOR UPDATE
-- name: stored_subscribers
SELECT email, position, active, frequency, fields, entry, version FROM subscribers
WHERE (position, email) > (:position, :email)
    AND (CAST(:frequency AS TEXT) IS NULL OR frequency = :frequency)
    AND (CAST(:active AS INTEGER) IS NULL OR active = :active)
ORDER BY position, email LIMIT :limit
-- name: stored_subscribers.postgres
-- Read through a server-side cursor (one snapshot, fetched in chunks), not page by page.
SELECT email, position, active, frequency, fields, entry, version FROM subscribers
WHERE (CAST(:frequency AS TEXT) IS NULL OR frequency = :frequency)
    AND (CAST(:active AS INTEGER) IS NULL OR active = :active)
ORDER BY position, email
-- name: subscribers_since
SELECT email, position, active, frequency, fields, entry, version FROM subscribers
WHERE version > :version ORDER BY position, email
-- name: add_subscriber
INSERT INTO subscribers (email, position, active, frequency, fields, entry, version, updated_at)
VALUES (:email, coalesce(:position, (SELECT max(position) + 1 FROM subscribers), 0), :active,
    :frequency, :fields, :entry, 0, :stamp)
ON CONFLICT (email) DO NOTHING
-- name: change_subscriber
UPDATE subscribers SET active = :active, frequency = :frequency, fields = :fields,
    entry = :entry, updated_at = :stamp
WHERE email = :email AND version = :expect
-- name: stamp_subscriber
UPDATE subscribers SET version = :version WHERE email = :email
-- name: put_subscriber
INSERT INTO subscribers (email, position, active, frequency, fields, entry, version, updated_at)
VALUES (:email, :position, :active, :frequency, :fields, :entry, :version, :stamp)
ON CONFLICT (email) DO UPDATE
    SET position = excluded.position, active = excluded.active,
        frequency = excluded.frequency, fields = excluded.fields, entry = excluded.entry,
        version = excluded.version, updated_at = excluded.updated_at
    WHERE subscribers.version = :expect
-- name: remove_subscriber
DELETE FROM subscribers WHERE email = :email
-- name: unsubscribed_in_list
SELECT s.email FROM subscribers s JOIN suppressions p ON p.address = s.email
WHERE s.active = 1 AND p.lifted_at IS NULL AND p.reason = 'unsubscribed'
ORDER BY s.position, s.email
-- name: queue_list_change
INSERT INTO subscriber_outbox (email, change, at) VALUES (:email, :change, :stamp)
RETURNING id
-- name: list_changes
SELECT id, email, change FROM subscriber_outbox ORDER BY id
-- name: forget_list_changes
DELETE FROM subscriber_outbox WHERE id = ANY(:ids)
-- name: stamp_subscribers
UPDATE subscribers SET version = :version WHERE version = -1
-- name: subscriber_addresses
SELECT email FROM subscribers WHERE version > :version

-- operations: figures, sender rates, edition summaries, pauses -------------------------------

-- name: state_figures
SELECT 'status', status, count(*), NULL FROM deliveries WHERE edition = ANY(:editions)
GROUP BY status
UNION ALL
SELECT 'owed', '', count(*), min(created_at) FROM deliveries
WHERE edition = ANY(:editions) AND status = 'owed'
UNION ALL
SELECT 'suppressed', reason, count(*), NULL FROM suppressions WHERE lifted_at IS NULL
GROUP BY reason
UNION ALL
SELECT 'paused', domain_group, count(*), min(since) FROM pauses WHERE lifted_at IS NULL
GROUP BY domain_group
-- name: sender_counts
-- The recipient domain is what follows an address's last "@": rtrim drops every character
-- but "@" from its end (the same in both databases, which spell "find" differently).
SELECT edition, substr(address, length(rtrim(address, replace(address, '@', ''))) + 1) AS dom,
    what, count(*), max(at)
FROM (
    SELECT edition, subscriber AS address, status AS what, NULL AS at FROM deliveries
    WHERE edition = ANY(:editions) AND status IN ('sent', 'failed')
    UNION ALL
    SELECT edition, address, kind, at FROM bounces WHERE edition = ANY(:editions)
) AS counted
GROUP BY edition, dom, what
-- name: edition_counts
-- The store adds `WHERE edition = :edition` (one edition), the GROUP BY of every column but
-- the counts, and the order (edition, status).
SELECT edition, status, detail, last_code,
    CASE WHEN status = 'owed' AND last_error LIKE :paused THEN 1 ELSE 0 END AS held,
    count(*), min(last_error)
FROM deliveries
-- name: pause
INSERT INTO pauses (domain_group, since, evidence, actor)
VALUES (:domain_group, :since, :evidence, :actor)
ON CONFLICT (domain_group) WHERE lifted_at IS NULL DO NOTHING
-- name: resume
UPDATE pauses SET lifted_at = :stamp, lifted_by = :actor
WHERE domain_group = ANY(:groups) AND lifted_at IS NULL
-- name: pauses
SELECT domain_group, since, evidence, actor, lifted_at, lifted_by FROM pauses ORDER BY id
