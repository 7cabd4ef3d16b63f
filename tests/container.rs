//! The container image cannot be built on machines without a Docker engine, so the
//! Dockerfile's shape is checked here: a multi-stage build from pinned base images, the
//! binary built with the command scripts/test runs (plus `--release`), a non-root user, the
//! configuration at /etc/kstate/worker.toml with `state.dir` on the volume and `metrics.addr`
//! on the exposed port, SIGTERM as the stop signal; and the `worker` service of
//! docker-compose.yml that runs it.

use std::collections::BTreeMap;

use anyhow::Context;

fn read(path: &str) -> anyhow::Result<String> {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).with_context(|| format!("reading {full}"))
}

/// The Dockerfile's instructions, `(INSTRUCTION, arguments)`, continuation lines joined and
/// comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// `image:tag[@sha256:…]` with a version tag (digits), not `latest` or a bare name.
fn pinned(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or_default();
    match name.rsplit_once(':') {
        Some((_, tag)) => tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
        None => false,
    }
}

/// The first `"key" = value` line of a TOML text, with `sed`'s replacement applied if the
/// Dockerfile has one for the key.
fn sed_value(dockerfile: &str, key: &str) -> Option<String> {
    let prefix = format!("s|^\"{key}\" = .*|\"{key}\" = ");
    let at = dockerfile.find(&prefix)? + prefix.len();
    let rest = &dockerfile[at..];
    Some(rest[..rest.find('|')?].trim_matches('"').to_string())
}

#[test]
fn the_dockerfile_builds_a_pinned_non_root_image_with_state_on_a_volume() -> anyhow::Result<()> {
    let text = read("Dockerfile")?;
    let steps = instructions(&text);
    let of = |op: &str| -> Vec<&String> {
        steps
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a)
            .collect()
    };

    let froms = of("FROM");
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    for from in &froms {
        let image = from.split_whitespace().next().unwrap_or_default();
        assert!(pinned(image), "base image not pinned to a version: {from}");
    }
    // Instructions after the last FROM describe the image that ships.
    let last_from = steps.iter().rposition(|(o, _)| o == "FROM").unwrap_or(0);
    let runtime: BTreeMap<&str, &str> = steps[last_from..]
        .iter()
        .map(|(o, a)| (o.as_str(), a.as_str()))
        .collect();

    let user = runtime
        .get("USER")
        .context("the runtime stage sets a USER")?;
    let uid = user.split(':').next().unwrap_or_default();
    assert!(uid != "root" && uid != "0", "runs as root: USER {user}");
    assert_eq!(runtime.get("STOPSIGNAL"), Some(&"SIGTERM"));

    let entrypoint: Vec<String> =
        serde_json::from_str(runtime.get("ENTRYPOINT").context("an ENTRYPOINT")?)?;
    assert_eq!(
        entrypoint,
        [
            "/usr/local/bin/kstate-worker",
            "--config",
            "/etc/kstate/worker.toml"
        ]
    );
    assert!(
        steps
            .iter()
            .any(|(o, a)| o == "COPY" && a.ends_with(" /etc/kstate/worker.toml")),
        "the configuration is copied to /etc/kstate/worker.toml"
    );

    // The shipped configuration is config/worker.toml with state.dir on the volume and
    // metrics.addr on the exposed port; sed's anchors must match lines of that file.
    let config = read("config/worker.toml")?;
    for key in ["state.dir", "metrics.addr"] {
        assert!(
            config
                .lines()
                .any(|l| l.starts_with(&format!("\"{key}\" = "))),
            "config/worker.toml has no line the Dockerfile's sed rewrites for {key}"
        );
    }
    let state_dir = sed_value(&text, "state.dir").context("sed sets state.dir")?;
    let volumes: Vec<String> = serde_json::from_str(runtime.get("VOLUME").context("a VOLUME")?)?;
    assert_eq!(volumes, vec![state_dir], "state.dir is the volume");
    let metrics_addr = sed_value(&text, "metrics.addr").context("sed sets metrics.addr")?;
    let port = metrics_addr.rsplit(':').next().unwrap_or_default();
    assert!(
        metrics_addr.starts_with("0.0.0.0:"),
        "listens beyond the container's loopback: {metrics_addr}"
    );
    assert_eq!(
        runtime.get("EXPOSE"),
        Some(&port),
        "the HTTP port is exposed"
    );
    assert!(
        steps
            .iter()
            .any(|(o, a)| o == "RUN" && a.contains("chown kstate:kstate /var/lib/kstate")),
        "the non-root user owns the state volume"
    );
    Ok(())
}

#[test]
fn ci_builds_the_binary_with_the_images_command() -> anyhow::Result<()> {
    let steps = instructions(&read("Dockerfile")?);
    let image_build = steps
        .iter()
        .find(|(o, a)| o == "RUN" && a.starts_with("cargo build"))
        .map(|(_, a)| a.clone())
        .context("the Dockerfile runs cargo build")?;
    assert_eq!(
        image_build,
        "cargo build --release --locked --bin kstate-worker"
    );
    let script = read("scripts/test")?;
    let ci_build = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo build"))
        .context("scripts/test runs cargo build")?;
    assert_eq!(
        ci_build.split_whitespace().collect::<Vec<_>>(),
        image_build
            .split_whitespace()
            .filter(|w| *w != "--release")
            .collect::<Vec<_>>(),
        "scripts/test builds the binary as the image does (without --release)"
    );
    let ignore = read(".dockerignore")?;
    for excluded in ["target", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore keeps {excluded} out of the build context"
        );
    }
    Ok(())
}

#[test]
fn compose_has_an_opt_in_worker_service_built_from_the_dockerfile() -> anyhow::Result<()> {
    let compose: serde_yaml::Value = serde_yaml::from_str(&read("docker-compose.yml")?)?;
    let worker = &compose["services"]["worker"];
    assert_eq!(worker["build"], serde_yaml::Value::from("."));
    assert_eq!(
        worker["profiles"][0],
        serde_yaml::Value::from("worker"),
        "`docker compose up -d` starts only the broker"
    );
    assert_eq!(
        worker["depends_on"]["kafka"]["condition"],
        serde_yaml::Value::from("service_healthy")
    );
    assert_eq!(worker["stop_signal"], serde_yaml::Value::from("SIGTERM"));
    let volumes: Vec<String> = serde_yaml::from_value(worker["volumes"].clone())?;
    assert!(
        volumes.iter().any(|v| v.ends_with(":/var/lib/kstate")),
        "state.dir on a named volume: {volumes:?}"
    );
    Ok(())
}
