//! The route compiler's checks, with fixed definitions.

use super::*;
use crate::delivery::http::sign::SigningKey;

fn definition() -> Definition<'static> {
    Definition {
        name: "orders",
        events: vec!["order.*"],
        url: "https://erp.example.com/hooks",
        ordered: false,
        timeout: DEFAULT_TIMEOUT,
        concurrency: DEFAULT_CONCURRENCY,
        order_key: None,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        backoff: default_backoff(),
        filter: None,
        condition: None,
        transform: None,
        redact: vec!["data.customer.email"],
        format: BodyFormat::Standard,
        headers: vec![("x-tenant", "acme")],
        log_payload: false,
        signer: Some(Signer::Standard(vec![SigningKey::from_whsec(&SigningKey::generate()).unwrap()])),
        tenant: None,
        circuit_breaker: None,
        rate_limit: None,
        batch: None,
        digest: "d".into(),
        origin: Origin::File { file: "routes/orders.toml".into() },
    }
}

fn problems(def: Definition<'_>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let route = compile(def, Policy::default(), &TenantsFile::default(), &mut |f, m| out.push((f.api_field(), m)));
    assert_eq!(route.is_some(), out.is_empty(), "a route exactly when there is no problem: {out:?}");
    out
}

#[test]
fn a_valid_definition_compiles_with_every_value() {
    let route =
        compile(definition(), Policy::default(), &TenantsFile::default(), &mut |f, m| panic!("{f:?}: {m}")).unwrap();
    assert_eq!((route.name.as_str(), route.queue()), ("orders", "hookrelay.route.orders".to_string()));
    assert_eq!((route.concurrency, route.retry.max_attempts, route.retry.backoff.len()), (16, 8, 7));
    assert_eq!(route.steps.redact.len(), 1);
    assert_eq!(route.headers["x-tenant"], "acme");
}

#[test]
fn limits_are_the_same_for_every_source_and_every_problem_is_reported() {
    let def = Definition {
        name: "a b",
        events: vec!["order..paid"],
        url: "http://erp.example.com/",
        timeout: Duration::ZERO,
        concurrency: 10_001,
        max_attempts: 1_001,
        backoff: vec![Duration::from_secs(1), Duration::ZERO],
        redact: vec!["data..x"],
        headers: vec![("x bad", "1"), ("x-ok", "a\u{7}b")],
        tenant: Some("acme/1"),
        ..definition()
    };
    let fields: Vec<String> = problems(def).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "name",
            "events[0]",
            "url",
            "timeout",
            "concurrency",
            "max_attempts",
            "backoff[1]",
            "redact[0]",
            "headers.x bad",
            "headers.x-ok",
            "tenant"
        ]
    );
    let at_limits = Definition { concurrency: 10_000, max_attempts: 1_000, ..definition() };
    assert!(problems(at_limits).is_empty());
    let zero =
        problems(Definition { concurrency: 0, max_attempts: 0, events: vec![], backoff: vec![], ..definition() });
    assert_eq!(
        zero,
        [
            ("events".to_string(), "must name at least one event type or pattern".to_string()),
            ("concurrency".into(), "must be at least 1 and at most 10000".into()),
            ("max_attempts".into(), "must be at least 1 and at most 1000".into()),
            ("backoff".into(), "must list at least one duration, none of them zero".into()),
        ]
    );
}

#[test]
fn a_source_that_could_not_sign_gets_no_route_and_no_second_report() {
    let mut reported = 0;
    let def = Definition { signer: None, ..definition() };
    assert!(compile(def, Policy::default(), &TenantsFile::default(), &mut |_, _| reported += 1).is_none());
    assert_eq!(reported, 0);
}

#[test]
fn credential_headers_are_marked_sensitive_at_load() {
    let headers = vec![
        ("authorization", "Bearer s3cret"),
        ("Proxy-Authorization", "Basic x"),
        ("cookie", "sid=1"),
        ("x-api-key", "k"),
        ("x-auth-token", "t"),
        ("x-client-secret", "s"),
        ("x-tenant", "acme"),
        ("accept-language", "en"),
    ];
    let route =
        compile(Definition { headers, ..definition() }, Policy::default(), &TenantsFile::default(), &mut |f, m| {
            panic!("{f:?}: {m}")
        })
        .unwrap();
    let mut sensitive: Vec<&str> =
        route.headers.iter().filter(|(_, v)| v.is_sensitive()).map(|(k, _)| k.as_str()).collect();
    sensitive.sort();
    assert_eq!(
        sensitive,
        ["authorization", "cookie", "proxy-authorization", "x-api-key", "x-auth-token", "x-client-secret"]
    );
    for generated in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-signature",
        "content-type",
        "user-agent",
        "hookrelay-sequence",
        "hookrelay-attempt",
        "hookrelay-route",
        "traceparent",
    ] {
        assert!(!is_credential(generated), "{generated} is what every attempt sends, kept as it is");
    }
}

#[test]
fn a_tenant_is_checked_and_its_attribute_is_part_of_the_digest() {
    let compiled = |attribute: &str, tenant| {
        let tenants = TenantsFile { attribute: attribute.into() };
        compile(Definition { tenant, ..definition() }, Policy::default(), &tenants, &mut |f, m| panic!("{f:?}: {m}"))
            .unwrap()
    };
    let plain = compiled("subject", None);
    assert_eq!((plain.tenant(), plain.digest.as_str()), (None, "d"), "no tenant: the source's digest as it is");
    let by_subject = compiled("subject", Some("acme"));
    let by_extension = compiled("tenantid", Some("acme"));
    assert_eq!(by_subject.tenant(), Some("acme"));
    assert_ne!(by_subject.digest, plain.digest);
    assert_ne!(by_subject.digest, by_extension.digest, "a reload that changes the attribute restarts the route");
}

#[test]
fn endpoint_policies_are_checked_against_their_limits() {
    let s = Duration::from_secs;
    let breaker = |failures, open_for, disable_after| CircuitBreaker { failures, open_for, disable_after };
    let api = Origin::Api { subscription: "sub_1".into() };
    let good = Definition {
        circuit_breaker: Some(breaker(5, s(30), None)),
        rate_limit: Some(RateLimit { per_second: 0.5, burst: 1 }),
        ..definition()
    };
    let route = compile(good, Policy::default(), &TenantsFile::default(), &mut |f, m| panic!("{f:?}: {m}")).unwrap();
    assert!(route.gated());
    assert_eq!(route.circuit_breaker, Some(breaker(5, s(30), None)));
    assert!(!compile(definition(), Policy::default(), &TenantsFile::default(), &mut |_, _| ()).unwrap().gated());

    let bad = Definition {
        circuit_breaker: Some(breaker(0, Duration::ZERO, Some(s(60)))),
        rate_limit: Some(RateLimit { per_second: 0.0, burst: 0 }),
        ..definition()
    };
    assert_eq!(
        problems(bad),
        [
            ("circuit_breaker.failures".to_string(), "must be at least 1 and at most 10000".to_string()),
            ("circuit_breaker.open_for".into(), "must be more than zero and at most 1 day".into()),
            (
                "circuit_breaker.disable_after".into(),
                "applies to API subscriptions only: a file route cannot be disabled (a receiver's 410 Gone \
                 dead-letters its events instead)"
                    .into()
            ),
            ("rate_limit.per_second".into(), "must be more than zero and at most 100000".into()),
            ("rate_limit.burst".into(), "must be at least 1 and at most 100000".into()),
        ]
    );
    let too_much = Definition {
        circuit_breaker: Some(breaker(10_001, s(86_401), Some(Duration::ZERO))),
        rate_limit: Some(RateLimit { per_second: f64::NAN, burst: 100_001 }),
        origin: api.clone(),
        ..definition()
    };
    let fields: Vec<String> = problems(too_much).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "circuit_breaker.failures",
            "circuit_breaker.open_for",
            "circuit_breaker.disable_after",
            "rate_limit.per_second",
            "rate_limit.burst"
        ]
    );
    let subscription = Definition {
        circuit_breaker: Some(breaker(1, s(86_400), Some(s(3600)))),
        rate_limit: Some(RateLimit { per_second: 100_000.0, burst: 100_000 }),
        origin: api,
        ..definition()
    };
    assert!(problems(subscription).is_empty(), "at the limits, and disable_after on a subscription");
}
