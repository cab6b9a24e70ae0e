//! The Kubernetes manifests of the distributed flow (docs/kubernetes,
//! docs/sharding.md "Kubernetes"), checked offline:
//!
//! - against Kubernetes' own schemas: `kubernetes-validate --strict`
//!   (<https://github.com/willthames/kubernetes-validate>, installed from
//!   PyPI by `.ci/run`) for each pinned Kubernetes version; the test fails
//!   when the tool is missing, and shows that `--strict` refuses a
//!   misspelt field;
//! - against fleetsim: every container's `command` and `args`, with the
//!   `$(VAR)` placeholders Kubernetes expands substituted, go through
//!   fleetsim's own flag parser ([`fleetsim::cli::check_args`]) or the
//!   reference server's binary;
//! - against each other: the shard count, the report directories merge
//!   lists, the fleet manifest's path, the scenario (a valid one), the
//!   image, the Prometheus annotations and the hardening every pod carries.
//!
//! The YAML is read by PyYAML, which kubernetes-validate reads it with
//! (installed with it), so no second YAML reader joins the workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The version `.ci/run` installs.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// The Kubernetes versions the manifests must be valid for: 1.33, the
/// first where every field they use is GA (`backoffLimitPerIndex`), and
/// the newest the pinned tool knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];
/// The one placeholder the worker's args may hold: Kubernetes expands
/// `$(VAR)` from the container's environment.
const INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

fn kube_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/kubernetes")
}

fn install_hint() -> String {
    format!(
        "run `bash .ci/run` (it installs what the tests need) or \
         `python3 -m pip install kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}`"
    )
}

/// Fails the test, naming the fix, when the tool is missing.
fn require_kubernetes_validate() -> String {
    let out = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!("kubernetes-validate is not installed: {}", install_hint()),
    }
}

/// Every manifest file: the `.yaml` files under docs/kubernetes but the
/// kustomization (kustomize's, not a Kubernetes object).
fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&kube_dir(), &mut files);
    files.sort();
    files
}

/// Each file's YAML documents, as JSON, read by one Python process.
fn load_yaml(paths: &[PathBuf]) -> Vec<Vec<Value>> {
    const TO_JSON: &str = "import json, sys, yaml\n\
        files = [[d for d in yaml.safe_load_all(open(f)) if d is not None] for f in sys.argv[1:]]\n\
        print(json.dumps(files, default=str))";
    let out = Command::new("python3")
        .args(["-c", TO_JSON])
        .args(paths)
        .output()
        .unwrap_or_else(|e| panic!("python3 does not run ({e}): {}", install_hint()));
    assert!(
        out.status.success(),
        "cannot read {paths:?} as YAML (PyYAML comes with kubernetes-validate: {}):\n{}",
        install_hint(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(kube_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every object of every manifest file, with the file it is in (read once
/// for all the tests).
fn objects() -> Vec<(String, Value)> {
    static OBJECTS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    OBJECTS
        .get_or_init(|| {
            let files = manifest_files();
            files
                .iter()
                .zip(load_yaml(&files))
                .flat_map(|(f, docs)| {
                    let name = relative(f);
                    docs.into_iter().map(move |o| (name.clone(), o))
                })
                .collect()
        })
        .clone()
}

fn find<'a>(objects: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} in docs/kubernetes"))
}

/// A workload's pod spec (Job, Deployment, or a bare Pod).
fn pod_spec(o: &Value) -> Option<&Value> {
    match o["kind"].as_str()? {
        "Job" | "Deployment" => Some(&o["spec"]["template"]["spec"]),
        "Pod" => Some(&o["spec"]),
        _ => None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string in command/args").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A container's whole command line: `command` then `args`.
fn argv(container: &Value) -> Vec<String> {
    let mut argv = strings(&container["command"]);
    argv.extend(strings(&container["args"]));
    argv
}

/// The value after `flag` in `argv`.
fn flag<'a>(argv: &'a [String], name: &str) -> &'a str {
    let at = argv
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("{name} missing from {argv:?}"));
    argv.get(at + 1)
        .unwrap_or_else(|| panic!("{name} without a value in {argv:?}"))
}

/// Every container of a pod spec, init containers first (they run first).
fn containers(spec: &Value) -> Vec<&Value> {
    let list = |key: &str| spec[key].as_array().into_iter().flatten();
    list("initContainers").chain(list("containers")).collect()
}

/// The command line of the one container of a Job that runs fleetsim.
fn job_argv(objects: &[(String, Value)], job: &str) -> Vec<String> {
    let spec = pod_spec(find(objects, "Job", job)).unwrap();
    let runs: Vec<Vec<String>> = containers(spec)
        .into_iter()
        .map(argv)
        .filter(|a| a.first().is_some_and(|p| p == "fleetsim"))
        .collect();
    assert_eq!(runs.len(), 1, "job {job} runs fleetsim once");
    runs.into_iter().next().unwrap()
}

/// Replaces `$(JOB_COMPLETION_INDEX)` with `index`; any other placeholder,
/// and a shell's `${...}` (Kubernetes would pass it on literally: no shell
/// runs these commands), fails the test.
fn substitute(arg: &str, index: u32) -> String {
    assert!(
        !arg.contains("${"),
        "`{arg}`: no shell expands ${{...}} here; Kubernetes expands $(VAR)"
    );
    let out = arg.replace(&format!("$({INDEX_VAR})"), &index.to_string());
    assert!(!out.contains("$("), "`{arg}`: an unknown placeholder");
    out
}

/// The worker Job's shard count, checked to be the same in every place.
fn shard_count(objects: &[(String, Value)]) -> u32 {
    let job = find(objects, "Job", "fleetsim-workers");
    let completions = job["spec"]["completions"].as_u64().unwrap();
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(
        job["spec"]["parallelism"].as_u64(),
        Some(completions),
        "every shard runs at once: parallelism = completions"
    );
    let argv = job_argv(objects, "fleetsim-workers");
    let shard = flag(&argv, "--shard");
    assert_eq!(
        shard,
        format!("$({INDEX_VAR})/{completions}"),
        "--shard is the completion index over completions"
    );
    u32::try_from(completions).unwrap()
}

fn fleetsim_accepts(argv: &[String]) -> Result<(), String> {
    let args: Vec<OsString> = argv.iter().map(OsString::from).collect();
    fleetsim::cli::check_args(args)
}

/// Every fleetsim command line in the manifests, by subcommand, with the
/// worker's expanded for each completion index.
fn fleetsim_command_lines(objects: &[(String, Value)]) -> BTreeMap<String, Vec<Vec<String>>> {
    let shards = shard_count(objects);
    let mut lines: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for (_, o) in objects {
        let Some(spec) = pod_spec(o) else { continue };
        for c in containers(spec) {
            let argv = argv(c);
            if argv.first().map(String::as_str) != Some("fleetsim") {
                continue;
            }
            let sub = argv.get(1).cloned().unwrap_or_default();
            let indexes = if argv.iter().any(|a| a.contains("$(")) {
                0..shards
            } else {
                0..1
            };
            for i in indexes {
                let line: Vec<String> = argv.iter().map(|a| substitute(a, i)).collect();
                lines.entry(sub.clone()).or_default().push(line);
            }
        }
    }
    lines
}

/// Checks the fleetsim command lines of these subcommands with fleetsim's
/// parser, and that the manifests run exactly `expected` subcommands.
fn check_fleetsim_commands(subcommands: &[&str]) {
    let objects = objects();
    let lines = fleetsim_command_lines(&objects);
    let found: BTreeSet<&str> = lines.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = ["merge", "provision", "run", "teardown"].into();
    assert_eq!(found, expected, "the subcommands the manifests run");
    let mut refused = Vec::new();
    for sub in subcommands {
        for line in &lines[*sub] {
            if let Err(e) = fleetsim_accepts(line) {
                refused.push(format!("{}\n{e}", line.join(" ")));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "fleetsim refuses command lines in docs/kubernetes:\n{}",
        refused.join("\n")
    );
}

#[test]
fn every_manifest_is_valid_for_the_pinned_kubernetes_versions() {
    let version = require_kubernetes_validate();
    let files = manifest_files();
    let objects = objects().len();
    assert!(objects >= 10, "{objects} objects in docs/kubernetes");
    for k8s in KUBERNETES_VERSIONS {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", k8s])
            .args(&files)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("kubernetes-validate {version}, Kubernetes {k8s}:\n{stdout}{stderr}");
        assert!(
            out.status.success(),
            "docs/kubernetes is not valid for Kubernetes {k8s}:\n{stdout}{stderr}"
        );
        // One "passed" per object: none skipped for want of a schema.
        let passed = stdout.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed, objects,
            "every object is checked against Kubernetes {k8s}:\n{stdout}{stderr}"
        );
    }
}

/// `--strict` is in effect: a misspelt field, which Kubernetes would drop
/// silently (here: the shard retry limit), is refused.
#[test]
fn kubernetes_validate_refuses_a_misspelt_field() {
    require_kubernetes_validate();
    let workers = kube_dir().join("steps/2-workers.yaml");
    let text = std::fs::read_to_string(&workers).unwrap();
    assert!(text.contains("backoffLimitPerIndex: 0"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("workers.yaml");
    std::fs::write(
        &bad,
        text.replace("backoffLimitPerIndex: 0", "backoffLimitPerIndx: 0"),
    )
    .unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSIONS[0]])
        .arg(&bad)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "accepted:\n{stdout}");
    assert!(stdout.contains("backoffLimitPerIndx"), "{stdout}");
}

/// `kubectl apply -k docs/kubernetes` applies every long-lived part (each
/// file beside the kustomization); the steps are applied one at a time.
#[test]
fn the_kustomization_lists_every_long_lived_part() {
    let kustomization = load_yaml(&[kube_dir().join("kustomization.yaml")]).remove(0);
    let listed: BTreeSet<String> = kustomization[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let beside: BTreeSet<String> = manifest_files()
        .iter()
        .map(|f| relative(f))
        .filter(|f| !f.contains('/'))
        .collect();
    assert_eq!(listed, beside);
    assert!(
        kustomization[0].get("namespace").is_none(),
        "namespace-agnostic: the namespace comes from -n"
    );
}

/// The merge and the reference server's command lines, checked with the
/// parsers as they are on main.
#[test]
fn the_cli_accepts_the_merge_and_reference_server_commands() {
    check_fleetsim_commands(&["merge"]);
    // A bad command line is refused, so the check above can fail.
    let bad = [
        "fleetsim",
        "merge",
        "/data/reports/shard-0",
        "--report-dri",
        "x",
    ];
    assert!(fleetsim_accepts(&bad.map(String::from)).is_err());

    let objects = objects();
    let server = pod_spec(find(&objects, "Deployment", "fleetsim-reference-server")).unwrap();
    let argv = argv(&server["containers"][0]);
    assert_eq!(argv[0], "reference-server");
    // The binary's own parser (it lives in the binary): clap reads the
    // flags in order and checks each value as it goes, so an unknown flag
    // or a bad value fails before the `--help` at the end prints the help.
    let check = |argv: &[String]| {
        Command::new(reference_server_bin())
            .args(&argv[1..])
            .arg("--help")
            .output()
            .unwrap()
    };
    let out = check(&argv);
    assert!(
        out.status.success(),
        "reference-server refuses {argv:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bad = argv.clone();
    bad.extend(["--http".to_string(), "0.0.0.0:notaport".to_string()]);
    assert!(!check(&bad).status.success(), "a bad --http is refused");
}

/// Provision, the workers and teardown. These subcommands and `run
/// --fleet` come with issue #18's distributed runs; until they are in
/// fleetsim's parser this test fails, naming each command line refused.
#[test]
fn the_cli_accepts_the_provision_worker_and_teardown_commands() {
    check_fleetsim_commands(&["provision", "run", "teardown"]);
}

/// The steps agree with each other: merge lists exactly the workers'
/// report directories, every step names the one fleet manifest, and
/// provision and the workers read the one scenario with the same seed.
#[test]
fn the_steps_agree_with_each_other() {
    let objects = objects();
    let shards = shard_count(&objects);
    let workers = job_argv(&objects, "fleetsim-workers");
    let provision = job_argv(&objects, "fleetsim-provision");
    let merge = job_argv(&objects, "fleetsim-merge");
    let teardown = job_argv(&objects, "fleetsim-teardown");

    let report_dir = flag(&workers, "--report-dir");
    let written: Vec<String> = (0..shards).map(|i| substitute(report_dir, i)).collect();
    let merged: Vec<String> = merge[2..]
        .iter()
        .take_while(|a| !a.starts_with("--"))
        .cloned()
        .collect();
    assert_eq!(merged, written, "merge lists every worker's report dir");
    let merged_dir = flag(&merge, "--report-dir");
    assert!(!written.iter().any(|w| w == merged_dir));

    let manifest = flag(&provision, "--manifest");
    assert_eq!(flag(&workers, "--fleet"), manifest);
    assert_eq!(
        teardown[1..],
        ["teardown".to_string(), manifest.to_string()]
    );
    // Once torn down (the init container succeeded), the manifest goes.
    let spec = pod_spec(find(&objects, "Job", "fleetsim-teardown")).unwrap();
    assert_eq!(spec["initContainers"][0]["args"][0], "teardown");
    assert_eq!(
        argv(&spec["containers"][0]),
        ["rm", "-f", "--", manifest],
        "the one container after the teardown"
    );
    assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
    assert_eq!(provision[2], workers[2], "the same scenario file");
    assert_eq!(flag(&provision, "--seed"), flag(&workers, "--seed"));
    assert_eq!(
        flag(&provision, "--transport"),
        flag(&workers, "--transport")
    );
    // The target is the reference server's Service.
    let service = find(&objects, "Service", "fleetsim-reference-server");
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert_eq!(
        flag(&provision, "--target"),
        format!("http://fleetsim-reference-server:{port}")
    );

    // The token comes from the one Secret, under a key it has.
    let secret = find(&objects, "Secret", "fleetsim-target");
    for (file, o) in &objects {
        let Some(spec) = pod_spec(o) else { continue };
        for c in containers(spec) {
            for env in c["env"].as_array().into_iter().flatten() {
                let r = &env["valueFrom"]["secretKeyRef"];
                if r.is_object() {
                    assert_eq!(r["name"], "fleetsim-target", "{file}");
                    let key = r["key"].as_str().unwrap();
                    assert!(secret["stringData"][key].is_string(), "{file}: {key}");
                }
            }
        }
    }

    // Provision clears the previous run's reports before it starts this one.
    let spec = pod_spec(find(&objects, "Job", "fleetsim-provision")).unwrap();
    let report_root = Path::new(report_dir).parent().unwrap();
    assert_eq!(
        argv(&spec["initContainers"][0]),
        ["rm", "-rf", "--", report_root.to_str().unwrap()]
    );
}

/// No shard runs twice: not retried by the Job, not restarted in place.
#[test]
fn a_failed_shard_is_never_run_again() {
    let objects = objects();
    let job = find(&objects, "Job", "fleetsim-workers");
    assert_eq!(job["spec"]["backoffLimitPerIndex"], 0);
    assert!(
        job["spec"].get("maxFailedIndexes").is_none(),
        "a failed shard does not stop the others"
    );
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    for name in ["fleetsim-provision", "fleetsim-merge", "fleetsim-teardown"] {
        let job = find(&objects, "Job", name);
        assert_eq!(job["spec"]["backoffLimit"], 0, "{name}");
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    }
}

/// The scenario in the ConfigMap is where the steps read it, passes
/// `fleetsim validate --strict`, and has a site for every worker (a
/// worker drives the sites with site % N == I).
#[test]
fn the_scenario_is_valid_and_has_a_site_for_every_worker() {
    let objects = objects();
    let shards = shard_count(&objects);
    let workers = job_argv(&objects, "fleetsim-workers");
    let config = find(&objects, "ConfigMap", "fleetsim-scenario");
    let spec = pod_spec(find(&objects, "Job", "fleetsim-workers")).unwrap();
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == "fleetsim-scenario")
        .expect("the workers mount the scenario");
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap();
    let file = Path::new(&workers[2]);
    assert_eq!(
        file.parent().unwrap(),
        Path::new(mount["mountPath"].as_str().unwrap())
    );
    let key = file.file_name().unwrap().to_str().unwrap();
    let text = config["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap has no key {key}"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(key);
    std::fs::write(&path, text).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = fleetsim::cli::main_with(
        ["fleetsim", "validate", "--strict", path.to_str().unwrap()].map(OsString::from),
        &mut out,
        &mut err,
    );
    assert_eq!(
        exit,
        fleetsim::cli::Exit::Passed,
        "{}",
        String::from_utf8_lossy(&err)
    );
    let scenario = fleetsim::scenario::parse(text, key).unwrap();
    assert!(
        scenario.fleet.sites >= shards,
        "{} sites for {shards} workers",
        scenario.fleet.sites
    );
}

/// What every pod carries: the one image at the workspace's version, a
/// non-root user, a read-only root, requests and limits; the workers'
/// Prometheus annotations name the address they serve metrics on.
#[test]
fn every_pod_is_hardened_and_the_workers_are_scraped() {
    let objects = objects();
    let image = format!("fleetsim:{}", env!("CARGO_PKG_VERSION"));
    let mut pods = 0;
    for (file, o) in &objects {
        let Some(spec) = pod_spec(o) else { continue };
        pods += 1;
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{file}");
        assert_eq!(spec["securityContext"]["runAsUser"], 10001, "{file}");
        for c in containers(spec) {
            let name = &c["name"];
            // Each program is checked: fleetsim and the server by their
            // parsers, `rm` by the_steps_agree_with_each_other; `sleep` is
            // the reports reader's.
            let program = argv(c).first().cloned().unwrap_or_default();
            assert!(
                ["fleetsim", "reference-server", "rm", "sleep"].contains(&program.as_str()),
                "{file} {name}: runs `{program}`"
            );
            assert_eq!(c["image"], image.as_str(), "{file} {name}");
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{file} {name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{file} {name}");
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
            for kind in ["requests", "limits"] {
                for r in ["cpu", "memory"] {
                    assert!(
                        c["resources"][kind][r].is_string(),
                        "{file} {name}: resources.{kind}.{r}"
                    );
                }
            }
        }
    }
    assert_eq!(
        pods, 6,
        "provision, workers, merge, teardown, server, reader"
    );

    // The Dockerfile builds that image: its tag, both programs, that user.
    let dockerfile = std::fs::read_to_string(kube_dir().join("Dockerfile")).unwrap();
    for needed in [
        format!("-t {image} ."),
        "target/release/fleetsim target/release/reference-server /out/".to_string(),
        "USER 10001:10001".to_string(),
    ] {
        assert!(
            dockerfile.contains(&needed),
            "the Dockerfile has `{needed}`"
        );
    }

    let job = find(&objects, "Job", "fleetsim-workers");
    let annotations = &job["spec"]["template"]["metadata"]["annotations"];
    let workers = job_argv(&objects, "fleetsim-workers");
    let addr = flag(&workers, "--metrics-addr");
    let (host, port) = addr.rsplit_once(':').unwrap();
    assert_eq!(host, "0.0.0.0", "reachable from Prometheus");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port);
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}

/// The `reference-server` binary beside this test's (built here when only
/// the tests were built).
fn reference_server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join(format!("reference-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args([
                "build",
                "-p",
                "reference-server",
                "--bin",
                "reference-server",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "cannot build reference-server");
    }
    bin
}
