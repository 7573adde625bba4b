//! The `postgres` source reads a model with one `COPY … TO STDOUT` and
//! writes the common scalar types' JSON itself. Its payloads must stay
//! byte for byte what the warehouse's own `jsonb` makes of the same row —
//! the form every ledger's content hashes were taken of — or an upgrade
//! would re-send every record once. These tests hold each type's edge
//! cases against the warehouse's `to_jsonb(row)::text`.

use std::path::Path;

use ebb_shared::config::Config;
use ebb_tests::{TestEnv, source_rows};

const CONFIG: &str = r#"
{HEADER}

[destinations.sink]
type = "http"
url = "http://127.0.0.1:9/"
"#;

/// A table with a column of each type the planner renders itself, and a
/// few it leaves to the warehouse, holding the values where a JSON
/// rendering can go wrong.
const TABLE: &[&str] = &[
    "CREATE TYPE mood AS ENUM ('sad', 'ok')",
    "CREATE DOMAIN positive AS integer CHECK (VALUE > 0)",
    "CREATE TABLE edge (
        id bigint, i2 smallint, i4 integer, i8 bigint,
        f4 real, f8 double precision, n numeric, n2 numeric(12,2),
        b boolean, t text, vc varchar(20), bp char(5), nm name, u uuid,
        d date, ts timestamp, tz timestamptz, iv interval, by bytea,
        j json, jb jsonb, arr text[], e mood, pos positive)",
    r#"INSERT INTO edge (id, i2, i4, i8, f4, f8, n, n2, b, t, vc, bp, nm, u, d, ts, tz, iv, by, j, jb, arr, e, pos) VALUES
        (1, -32768, -2147483648, -9223372036854775808, 0.1, 0.1, 1.10, 1.1, true, '', '', 'a', 'n', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            '2026-12-07', '2026-12-07 05:11:17.25', '2026-12-07 05:11:17+02', '1 day 02:00', '\x00ff',
            '{"b": 1, "a": [1, 2.50]}', '{"b": 1, "a": [1, 2.50]}', '{a,"b c",NULL}', 'sad', 1),
        (2, 32767, 2147483647, 9223372036854775807, 'NaN', 'NaN', 'NaN', -0.00, false, NULL, NULL, NULL, NULL, NULL,
            'infinity', '-infinity', 'infinity', NULL, '', 'null', 'null', '{}', NULL, NULL),
        (3, 0, 0, 0, '-0', '-0', 0.000, 12345678.90, NULL, E'tab\there\nline\r\\back "quoted" \x01\x1f\x7f é ☃ 😀', 'x', 'ab   ', 'x', NULL,
            '0044-03-15 BC', '1999-01-08 04:05:06', '1999-01-08 04:05:06.000001-08', '-1 year', NULL, '[]', '{}', NULL, 'ok', 7),
        (4, NULL, NULL, NULL, 'Infinity', '-Infinity', 'Infinity', NULL, NULL, 'NULL', '\N', NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (5, 1, 1, 1, 3.4028235e38, 1e30, 123456789012345678901234567890.123456789, 0.01, true, '\\N', 'tab	in', 'é', 'é', NULL,
            '2000-02-29', '2000-02-29 23:59:59.999999', '2000-02-29 23:59:59.999999+00', '00:00:00.5', '\x5c6e', '"text"', '"text"', '{"\\","\""}', NULL, 2),
        (6, 2, 2, 2, 1.5e-7, 1.5e-7, -1e-20, -5.55, false, repeat('long ', 200000), 'short', 'z', 'z', NULL,
            NULL, NULL, NULL, NULL, NULL, '1e3', '1e3', NULL, NULL, NULL),
        (7, 3, 3, 3, 123456.7, 123456789.123456789, 1e-7, 100, true, 'é', 'é', 'é', 'é', NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (8, 4, 4, 4, 1e-45, 5e-324, -0.5, 0, false, ' lead and trail ', '', '', '', NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (NULL, 5, 5, 5, 1, 1, 1, 1, true, 'no key', NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"#,
];

async fn warehouse_rows(env: &TestEnv, sql: &str) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let mut rows: Vec<(Option<Vec<u8>>, Vec<u8>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&env.warehouse)
            .await
            .expect(sql);
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// `[syncs.NAME]` over `model`, keyed by `id`, into the unused sink.
fn sync(name: &str, model: &str) -> String {
    format!(
        "\n[syncs.{name}]\nsource = \"warehouse\"\nmodel = \"{model}\"\nprimary_key = \"id\"\ndestination = \"sink\"\n"
    )
}

fn config(env: &TestEnv, syncs: &str) -> Config {
    let text = std::fs::read_to_string(env.config_path()).expect("config") + syncs;
    Config::parse(Path::new("edge.toml"), &text, &|_| None).expect("config")
}

fn assert_same_payloads(
    got: &[ebb_shared::sources::SourceRow],
    want: &[(Option<Vec<u8>>, Vec<u8>)],
) {
    assert_eq!(got.len(), want.len(), "row count");
    for (got, (key, payload)) in got.iter().zip(want) {
        assert_eq!(&got.key, key, "key");
        assert_eq!(
            String::from_utf8_lossy(&got.payload)
                .chars()
                .take(2000)
                .collect::<String>(),
            String::from_utf8_lossy(payload)
                .chars()
                .take(2000)
                .collect::<String>(),
            "the payload of key {:?} (left: the source, right: the warehouse's jsonb)",
            key.as_deref().map(String::from_utf8_lossy)
        );
        assert_eq!(
            &got.payload, payload,
            "the payload of key {key:?}, byte for byte"
        );
    }
}

#[tokio::test]
async fn payloads_are_byte_for_byte_the_warehouses_jsonb_for_every_edge_case() {
    let env = TestEnv::new(CONFIG, &[]).await;
    for sql in TABLE {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(&env.warehouse)
            .await
            .expect(sql);
    }
    let config = config(&env, &sync("all_columns", "SELECT * FROM edge"));
    let got = source_rows(&config, "all_columns")
        .await
        .expect("source rows");
    let want = warehouse_rows(
        &env,
        "SELECT convert_to(m.id::text, 'UTF8'), convert_to(to_jsonb(m)::text, 'UTF8') FROM (SELECT * FROM edge) m",
    )
    .await;
    assert_same_payloads(&got, &want);
    assert_eq!(got.len(), 9);
    assert!(got[0].key.is_none(), "the NULL key comes through as None");
    // Spot checks of what the comparison above holds, in case the
    // warehouse's jsonb itself ever changed.
    let row = |id: &str| {
        let row = got
            .iter()
            .find(|r| r.key.as_deref() == Some(id.as_bytes()))
            .expect("row");
        String::from_utf8(row.payload.clone()).expect("utf-8")
    };
    for part in [
        r#""f4": "NaN""#,
        r#""n": "NaN""#,
        r#""n2": 0.00"#,
        r#""t": null"#,
    ] {
        assert!(row("2").contains(part), "{part} in {}", row("2"));
    }
    for part in [
        r#""f4": 0"#,
        r#""f8": 0"#,
        r#""n": 0.000"#,
        r#""bp": "ab   ""#,
    ] {
        assert!(row("3").contains(part), "{part} in {}", row("3"));
    }
    assert!(row("6").contains(r#""f8": 0.00000015"#), "{}", row("6"));
    for part in [r#""t": "NULL""#, r#""vc": "\\N""#] {
        assert!(
            row("4").contains(part),
            "text that reads NULL is text: {}",
            row("4")
        );
    }
    assert!(
        row("1").contains(r#""t": """#),
        "empty string is not NULL: {}",
        row("1")
    );
}

/// A sync's own field names, in the order jsonb keeps them, and more than
/// fifty fields (one `jsonb_build_object` call took at most fifty).
#[tokio::test]
async fn mapped_and_wide_models_match_jsonb_build_object() {
    let env = TestEnv::new(CONFIG, &[]).await;
    let columns: Vec<String> = (1..=60).map(|c| format!("g * {c} AS c{c}")).collect();
    let wide = format!(
        "SELECT g AS id, {} FROM generate_series(1, 50) g",
        columns.join(", ")
    );
    let config = config(
        &env,
        &(r#"
[syncs.mapped]
source = "warehouse"
model = "SELECT g AS id, 'user' || g || '@example.com' AS email, g % 2 = 0 AS even, g * 1.5 AS score FROM generate_series(1, 100) g"
primary_key = "id"
destination = "sink"

[syncs.mapped.mapping]
"Email Address" = "email"
id = "id"
is_even = "even"
a_much_longer_field_name = "score"
x = "score"
"#
        .to_owned()
            + &sync("wide", &wide)),
    );
    let got = source_rows(&config, "mapped").await.expect("mapped rows");
    let want = warehouse_rows(
        &env,
        "SELECT convert_to(m.id::text, 'UTF8'), convert_to(jsonb_build_object('Email Address', m.email, 'id', m.id, \
         'is_even', m.even, 'a_much_longer_field_name', m.score, 'x', m.score)::text, 'UTF8') \
         FROM (SELECT g AS id, 'user' || g || '@example.com' AS email, g % 2 = 0 AS even, g * 1.5 AS score FROM generate_series(1, 100) g) m",
    )
    .await;
    assert_same_payloads(&got, &want);
    assert_eq!(
        String::from_utf8_lossy(&got[0].payload),
        r#"{"x": 1.5, "id": 1, "is_even": false, "Email Address": "user1@example.com", "a_much_longer_field_name": 1.5}"#
    );

    let got = source_rows(&config, "wide").await.expect("wide rows");
    let want = warehouse_rows(
        &env,
        &format!("SELECT convert_to(m.id::text, 'UTF8'), convert_to(to_jsonb(m)::text, 'UTF8') FROM ({wide}) m"),
    )
    .await;
    assert_same_payloads(&got, &want);
}

/// A model that fails half way through its rows fails the read with the
/// warehouse's words; it is not taken for a shorter model.
#[tokio::test]
async fn a_model_failing_mid_stream_is_a_read_error() {
    let env = TestEnv::new(CONFIG, &[]).await;
    let config = config(
        &env,
        &sync(
            "failing",
            "SELECT g AS id, 10 / (50000 - g) AS ratio FROM generate_series(1, 100000) g",
        ),
    );
    let err = source_rows(&config, "failing")
        .await
        .expect_err("a read error");
    assert!(err.contains("division by zero"), "{err}");
}
