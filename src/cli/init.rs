//! `hookrelay init DIR`: a config repository to start from, one of each part (a route, a
//! schema, a plugin), with a README and a CI job that runs `hookrelay validate` on every change.
//! It writes into a directory that is absent or empty only, so that it never overwrites a
//! config.

use super::Usage;
use anyhow::{Context, Result};
use std::path::Path;

/// The files of a new config repository, relative to it.
const FILES: &[(&str, &str)] = &[
    (
        "hookrelay.toml",
        r#"# hookrelay's main file (docs/configuration.md in the hookrelay repository).
# Bump `version` with every change: it is logged and recorded with every delivery attempt.
version = 1

# No [broker]: the embedded broker, a queue file in the data directory (data/ beside this file,
# or --data-dir, HOOKRELAY_DATA_DIR, [data] dir). For RabbitMQ add
#
#   [broker]
#   url = "amqp://guest:guest@127.0.0.1:5672/%2f"

[api]
listen = "127.0.0.1:8080"

# Webhook targets must be HTTPS on public addresses unless you allow otherwise:
# [security]
# allow_http = true
# allow_private_networks = true
"#,
    ),
    (
        "routes/orders.toml",
        r#"# One route: which events, where to, and how. The file's name is the route's name.
events = ["order.created"]
url = "https://example.com/hooks/orders"
ordered = true
transform = "plugins/hide-email.rhai"

[signing]
# The secret is never in this repository: set ORDERS_WEBHOOK_SECRET where hookrelay runs
# (a `whsec_…` value; `hookrelay validate --allow-missing-secrets` checks the rest without it).
secret_env = "ORDERS_WEBHOOK_SECRET"

[retry]
max_attempts = 5
backoff = ["1s", "5s", "30s", "2m"]
"#,
    ),
    (
        "schemas/order.created/v1.json",
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "order.created, version 1",
  "type": "object",
  "required": ["order_id", "total"],
  "properties": {
    "order_id": {"type": "string", "minLength": 1},
    "total": {"type": "number", "minimum": 0},
    "customer": {
      "type": "object",
      "properties": {"name": {"type": "string"}, "email": {"type": "string"}}
    }
  }
}
"#,
    ),
    (
        "plugins/hide-email.rhai",
        r#"// A transform: the receiver gets the order without the customer's e-mail address.
fn transform(event) {
    if "customer" in event.data {
        event.data.customer.remove("email");
    }
    event
}
"#,
    ),
    (".gitignore", "# hookrelay's state (the store and the embedded broker's queue file).\n/data/\n"),
    (
        ".github/workflows/hookrelay.yml",
        r#"# Checks the config on every change: every file, every route, every plugin, in one pass.
name: hookrelay config
on: [push, pull_request]
jobs:
  validate:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: dtolnay/rust-toolchain@stable
      # hookrelay from its repository: set the HOOKRELAY_REPO variable to where yours is hosted.
      - run: cargo install --locked --git "${{ vars.HOOKRELAY_REPO }}" hookrelay
      # Secrets live where hookrelay runs, not here.
      - run: hookrelay validate --allow-missing-secrets --config .
"#,
    ),
    (
        "README.md",
        r#"# hookrelay config

The routes, schemas and plugins a hookrelay router runs, reviewed like code.

```
hookrelay.toml                   the main file: broker, store, API, security
routes/orders.toml               order.created → https://example.com/hooks/orders, in order
schemas/order.created/v1.json    what an order.created event's data must be
plugins/hide-email.rhai          the route's transform: removes the customer's e-mail
```

Check a change (CI runs the same, `.github/workflows/hookrelay.yml`):

```sh
hookrelay validate --allow-missing-secrets --config .
```

Run it (state goes to `data/`, git-ignored):

```sh
ORDERS_WEBHOOK_SECRET=whsec_... hookrelay run --config .
```

A running router takes a change on SIGHUP or `POST /v1/config/reload`; a change that does not
load is rejected and the running config stays.
"#,
    ),
];

/// Writes a new config repository into `dir`.
pub(crate) fn init(dir: &Path) -> Result<()> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).map_err(|e| Usage(format!("{}: cannot be read: {e}", dir.display())))?;
        if entries.next().is_some() {
            return Err(Usage(format!(
                "{} is not empty: init writes a new config repository into an absent or empty directory only",
                dir.display()
            ))
            .into());
        }
    }
    for (rel, text) in FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    eprintln!(
        "a config repository in {}: `hookrelay validate --allow-missing-secrets --config {}` checks it",
        dir.display(),
        dir.display()
    );
    Ok(())
}
