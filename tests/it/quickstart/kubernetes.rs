//! The deployment example's config (`examples/deploy/kubernetes`): it validates, and every file
//! it names reaches the pod.

use super::REPO;
use crate::common::*;
use std::path::Path;
use std::process::Command;

#[test]
fn the_kubernetes_example_config_validates_and_every_file_reaches_the_pod() {
    let base = Path::new(REPO).join("examples/deploy/kubernetes/base");
    let config = base.join("config");
    let out = Command::new(bin())
        .args(["validate", "--allow-missing-secrets", "--config"])
        .arg(&config)
        .env("HOOKRELAY_BROKER__URL", "amqp://hookrelay:secret@hookrelay-rabbitmq.hookrelay.svc:5672/%2f")
        .env("HOOKRELAY_STORE__URL", "postgresql://hookrelay:secret@hookrelay-pg-rw.hookrelay:5432/hookrelay")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("warning:"), "{text}");
    // kustomization.yaml makes the ConfigMap of config/, one key per file, and sidecar.yaml maps
    // each key back to its path: a file missing from either would be missing in the pod.
    let kustomization = std::fs::read_to_string(base.join("kustomization.yaml")).unwrap();
    let sidecar = std::fs::read_to_string(base.join("sidecar.yaml")).unwrap();
    let mut files = Vec::new();
    let mut dirs = vec![config.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.path().strip_prefix(&config).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for rel in &files {
        let key = rel.replace('/', ".");
        assert!(
            kustomization.contains(&format!("- {key}=config/{rel}\n")),
            "kustomization.yaml lacks {key}=config/{rel}"
        );
        assert!(
            sidecar.contains(&format!("{{ key: {key}, path: {rel} }}")),
            "sidecar.yaml lacks {{ key: {key}, path: {rel} }}"
        );
    }
}
