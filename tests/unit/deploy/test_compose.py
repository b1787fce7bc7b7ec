"""docker-compose.yml, .env.example, the Dockerfile, the Procfile and the
Prometheus/Grafana files agree with the code.

No Docker engine runs here, so they are checked by parsing: the services and
their healthchecks and start order, that every variable they set is a setting
config/settings.py reads, that every command names a real management command,
Celery app, queue or WSGI module, and that the ports line up."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from honcho.environ import parse_procfile

from devtools import docs_settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
APP_SERVICES = {name: s for name, s in SERVICES.items() if s.get("build")}
QUEUES = {"pipeline", "webhooks", "whatsapp"}

# Variables the compose file passes on that are not Django settings, and who reads them.
READ_BY_OTHERS = {
    "POSTGRES_PASSWORD": "the postgres image (and the app's DATABASE_URL, built from it)",
    "FLOWER_BASIC_AUTH": "Flower itself (FLOWER_* options)",
    "GRAFANA_ADMIN_PASSWORD": "the grafana image",
    "REDIS_PASSWORD": "the redis container (--requirepass, and the app's REDIS_URL, built from it)",
    "KAFKA_ADMIN_PASSWORD": "the kafka container (its JAAS lines) and kafka-init",
    # Each also becomes one service's KAFKA_SASL_PASSWORD (tests/unit/deploy/test_kafka_acls.py).
    "KAFKA_RELAY_PASSWORD": "kafka-init (the relay's SCRAM user)",
    "KAFKA_CLASSIFIER_PASSWORD": "kafka-init (the classifier's SCRAM user)",
    "KAFKA_INGEST_PASSWORD": "kafka-init (ingest's SCRAM user)",
    "KAFKA_MONITOR_PASSWORD": "kafka-init (web's read-only monitor user)",
}


def settings_read() -> set[str]:
    """Every variable config/settings.py reads, as the settings reference finds them (its source,
    parsed, not imported: devtools.docs_settings)."""
    return set(docs_settings.parse((ROOT / "config" / "settings.py").read_text()).variables)


def interpolated(node) -> set[str]:
    """The ${VAR} names used anywhere in a parsed YAML tree."""
    if isinstance(node, dict):
        return set().union(*(interpolated(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(interpolated(v) for v in node)) if node else set()
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", str(node)))


def env_example_keys() -> set[str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return {line.split("=", 1)[0].strip() for line in lines if "=" in line and not line.lstrip().startswith("#")}


def command_problems(argv: list[str]) -> list[str]:
    """What is wrong with one process command: it must name a management
    command, the Celery app with a known subcommand and queues, or the WSGI app."""
    program = argv[0]
    if program == "python":
        if argv[1] != "manage.py" or argv[2] not in get_commands():
            return [f"{argv[:3]}: not a manage.py command"]
        return []
    if program == "celery":
        problems = []
        if argv[1:3] != ["-A", "config"] or not hasattr(importlib.import_module("config.celery"), "app"):
            problems.append(f"{argv}: not the config Celery app")
        if argv[3] not in {"worker", "beat", "flower"}:
            problems.append(f"{argv}: unknown celery subcommand {argv[3]}")
        if argv[3] == "worker":
            queues = set(argv[argv.index("-Q") + 1].split(","))
            if queues != QUEUES:
                problems.append(f"worker consumes {sorted(queues)}, the pipeline uses {sorted(QUEUES)}")
            if "-E" not in argv:
                problems.append("worker sends no task events, so Flower shows no tasks")
        return problems
    if program == "gunicorn":
        problems = []
        if "-c" in argv:
            config = argv[argv.index("-c") + 1]
            if not (ROOT / config).is_file():
                problems.append(f"{config}: no such gunicorn config")
            argv = argv[: argv.index("-c")] + argv[argv.index("-c") + 2 :]
        module, _, attr = argv[1].partition(":")
        if not hasattr(importlib.import_module(module), attr or "application"):
            problems.append(f"{argv[1]}: no such WSGI application")
        return problems
    return [f"{argv}: unknown program"]


def published(service: dict) -> set[int]:
    """The container ports a service publishes ("8000:8000" -> 8000)."""
    return {int(str(port).split(":")[-1].split("/")[0]) for port in service.get("ports", [])}


def test_services_healthchecks_and_start_order():
    expected = {"kafka", "postgres", "redis", "web", "ingest", "worker", "beat", "flower", "prometheus", "grafana"}
    assert expected <= set(SERVICES), expected - set(SERVICES)
    assert {"web", "ingest", "relay", "classify", "worker", "beat", "flower"} <= set(APP_SERVICES)
    for name in ("kafka", "postgres", "redis", "web"):
        test = SERVICES[name].get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"

    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    kraft = kafka["environment"]
    assert set(kraft["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kraft["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{kraft['KAFKA_NODE_ID']}@kafka:")
    assert "CONTROLLER" in kraft["KAFKA_CONTROLLER_LISTENER_NAMES"] and kraft.get("CLUSTER_ID")
    assert not any("ZOOKEEPER" in key for key in kraft)
    assert "CLIENT://kafka:9092" in kraft["KAFKA_ADVERTISED_LISTENERS"]  # KAFKA_BOOTSTRAP_SERVERS
    assert COMPOSE["x-app"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert " ".join(SERVICES["redis"]["command"]).count("--appendonly yes") == 1
    assert SERVICES["postgres"]["image"].startswith("postgres:")

    for name, service in SERVICES.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            assert condition in {"service_healthy", "service_completed_successfully"}, (name, dependency, condition)
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency}, which has no healthcheck"
    for name in ("web", "ingest", "relay", "classify", "worker", "beat"):
        waits = {dep: rule["condition"] for dep, rule in APP_SERVICES[name]["depends_on"].items()}
        assert waits["postgres"] == waits["redis"] == waits["kafka"] == "service_healthy", name
        assert waits["migrate"] == "service_completed_successfully", name
    # They use the topics, users and ACLs kafka-init creates (web: the monitor user).
    for name in ("web", "ingest", "relay", "classify"):
        assert APP_SERVICES[name]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully", name
    for name in ("ingest", "relay", "classify", "worker"):  # scalable: nothing that would clash between replicas
        assert "container_name" not in APP_SERVICES[name] and not APP_SERVICES[name].get("ports"), name


def test_every_variable_is_a_setting_and_documented():
    settings = settings_read()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "STATIC_ROOT"} <= settings
    allowed = settings | set(READ_BY_OTHERS)
    for name, service in APP_SERVICES.items():
        unknown = set(service.get("environment", {})) - allowed
        assert not unknown, f"{name} sets {sorted(unknown)}, which config/settings.py never reads"
    used = interpolated(COMPOSE)
    assert not used - allowed, f"docker-compose.yml uses {sorted(used - allowed)}, which nothing reads"
    documented = env_example_keys()
    assert used <= documented, f".env.example does not mention {sorted(used - documented)}"
    assert not documented - allowed, f".env.example sets {sorted(documented - allowed)}, which nothing reads"
    for name in READ_BY_OTHERS:
        assert name in used, f"{name} is allowed for the compose file but it does not use it"

    dockerfile_env = set(re.findall(r"^ENV\s+([A-Z_]+)=", (ROOT / "Dockerfile").read_text(), re.M))
    dockerfile_env |= set(re.findall(r"^\s+([A-Z_]+)=\S+ \\?$", (ROOT / "Dockerfile").read_text(), re.M))
    assert not {v for v in dockerfile_env if not v.startswith(("PYTHON", "PIP_"))} - settings


@pytest.mark.parametrize("source", ["docker-compose.yml", "Procfile"])
def test_every_command_runs_something_real(source):
    if source == "Procfile":
        processes = parse_procfile((ROOT / "Procfile").read_text()).processes
        commands = {name: shlex.split(command) for name, command in processes.items()}
        assert set(commands) == {"web", "ingest", "relay", "classify", "worker", "beat", "flower"}
    else:
        commands = {name: s["command"] for name, s in APP_SERVICES.items()}
    problems = [problem for argv in commands.values() for problem in command_problems(argv)]
    assert not problems, problems
    # Web and Flower listen where the compose file publishes them (the Procfile: 8000, 5555).
    web_bind = commands["web"][commands["web"].index("--bind") + 1]
    assert web_bind.endswith(":8000")
    flower_port = [a for a in commands["flower"] if a.startswith("--port=")]
    assert flower_port == ["--port=5555"]
    if source == "docker-compose.yml":
        assert web_bind.startswith("0.0.0.0:") and published(SERVICES["web"]) == {8000}
        assert published(SERVICES["flower"]) == {5555}
        assert "manage.py migrate" in " ".join(APP_SERVICES["migrate"]["command"])


def test_dockerfile_builds_what_the_services_run():
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = re.search(r"^FROM python:(\d+\.\d+)", dockerfile, re.M)
    assert version and f">={version.group(1)}" in project["requires-python"]
    copied = " ".join(re.findall(r"^COPY (.+)$", dockerfile, re.M))
    # Every runtime package the import contracts name (devtools is for development only).
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    packages = [p for p in tool["importlinter"]["root_packages"] if p != "devtools"]
    assert "core" in packages
    for package in (*packages, "manage.py", "requirements/runtime.lock"):
        assert re.search(rf"(^|\s){re.escape(package)}(\s|$)", copied), f"the Dockerfile does not copy {package}"
    # The locked dependencies, hashes checked, then the project alone.
    assert re.search(r"^RUN pip install --require-hashes -r requirements/runtime\.lock$", dockerfile, re.M)
    assert re.search(r"^RUN pip install --no-deps \.$", dockerfile, re.M)
    assert "collectstatic --noinput" in dockerfile
    dependencies = " ".join(project["dependencies"])
    for program in ("gunicorn", "celery", "flower", "whitenoise"):
        assert program in dependencies, f"{program} is not installed in the image"
    assert SERVICES["web"]["build"] == "." and (ROOT / ".dockerignore").exists()


def test_published_ports_are_on_this_machine_only():
    """Every port docker-compose.yml publishes is bound to 127.0.0.1, never to every interface."""
    published_anything = False
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            published_anything = True
            assert isinstance(port, str) and port.startswith("127.0.0.1:") and port.count(":") == 2, (name, port)
    assert published_anything
    # The ingest containers' metrics port is for Prometheus inside the network: bound in the
    # container to all its interfaces, published nowhere; outside compose it defaults to 127.0.0.1.
    ingest = APP_SERVICES["ingest"]
    assert ingest["environment"]["INGEST_METRICS_ADDR"] == "0.0.0.0" and not ingest.get("ports")
    assert "INGEST_METRICS_ADDR" not in COMPOSE["x-app"]["environment"]


def test_metrics_token_reaches_web_and_prometheus_but_is_never_committed():
    web_env = APP_SERVICES["web"]["environment"]
    assert web_env["METRICS_TOKEN"].startswith("${METRICS_TOKEN:?"), "required, and only from .env"
    assert "METRICS_TOKEN" not in COMPOSE["x-app"]["environment"], "only web needs it"
    assert COMPOSE["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}
    assert SERVICES["prometheus"]["secrets"] == ["metrics_token"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    web_job = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "web")
    assert web_job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    assert example["METRICS_TOKEN"] == "" and example["SECRET_KEY"] == "", ".env.example holds no secret"


def listeners(kafka_env: dict) -> dict[str, str]:
    """Each listener of the broker and the security protocol it speaks."""
    protocols = dict(pair.split(":") for pair in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    names = [listener.split("://")[0] for listener in kafka_env["KAFKA_LISTENERS"].split(",")]
    return {name: protocols[name] for name in names}


def test_kafka_requires_a_login_on_every_listener_and_authorizes_with_acls():
    kafka = SERVICES["kafka"]["environment"]
    assert listeners(kafka) == dict.fromkeys(("CONTROLLER", "BROKER", "CLIENT", "HOST"), "SASL_PLAINTEXT")
    assert all("_" not in name for name in listeners(kafka)), "the image turns _ into . in setting names"
    # The node's own listeners: SASL/PLAIN with the admin of the JAAS line, who exists before any SCRAM user.
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] == "BROKER"
    assert (
        kafka["KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL"]
        == kafka["KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL"]
        == "PLAIN"
    )
    for listener in ("CONTROLLER", "BROKER"):
        assert kafka[f"KAFKA_LISTENER_NAME_{listener}_SASL_ENABLED_MECHANISMS"] == "PLAIN"
        jaas = kafka[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"]
        assert jaas.startswith("org.apache.kafka.common.security.plain.PlainLoginModule required") and jaas.endswith(
            ";"
        )
        assert 'username="admin"' in jaas
        assert jaas.count('"${KAFKA_ADMIN_PASSWORD:?') == 2, "password and user_admin, from .env only"
    # The applications' listener and the host's: SCRAM users only.
    for listener in ("CLIENT", "HOST"):
        assert kafka[f"KAFKA_LISTENER_NAME_{listener}_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        jaas = kafka[f"KAFKA_LISTENER_NAME_{listener}_SCRAM___SHA___512_SASL_JAAS_CONFIG"]
        assert jaas == "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_SUPER_USERS"] == "User:admin"
    # No password lands in a KAFKA_* variable of its own (the image would make it a broker setting).
    assert not [key for key in kafka if key.startswith("KAFKA_") and "PASSWORD" in key]

    # The healthcheck logs in: the command writes the admin's client settings before starting the broker.
    command = " ".join(SERVICES["kafka"]["command"])
    assert "/tmp/admin.properties" in command and command.rstrip().endswith("exec /etc/kafka/docker/run")
    assert "security.protocol=SASL_PLAINTEXT" in command and "$$ADMIN_PASSWORD" in command
    assert SERVICES["kafka"]["environment"]["ADMIN_PASSWORD"].startswith("${KAFKA_ADMIN_PASSWORD:?")
    health = SERVICES["kafka"]["healthcheck"]["test"][1]
    assert "--bootstrap-server localhost:9094" in health and "--command-config /tmp/admin.properties" in health

    # Every application speaks SCRAM to the broker; the users are per service (test_kafka_acls.py).
    app_env = COMPOSE["x-app"]["environment"]
    assert app_env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT" and app_env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    for name in ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        assert name in settings_read()
    assert "KAFKA_SECURITY_PROTOCOL" not in env_example_keys(), "fixed by the compose broker, not a choice in .env"


def test_redis_requires_the_password_and_the_app_sends_it():
    redis = SERVICES["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?"), "the healthcheck logs in"
    assert "PONG" in " ".join(redis["healthcheck"]["test"]), "NOAUTH must not pass for healthy"
    url = COMPOSE["x-app"]["environment"]["REDIS_URL"]
    assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379/0", url), url
    # The broker, the result backend and the breakers all default to REDIS_URL.
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "BREAKER_REDIS_URL"):
        assert all(name not in s.get("environment", {}) for s in APP_SERVICES.values()), name


def test_prometheus_and_grafana_files_match_the_services():
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["web"]["static_configs"][0]["targets"] == ["web:8000"] and jobs["web"]["metrics_path"] == "/metrics"
    ingest = jobs["ingest"]["dns_sd_configs"][0]
    assert ingest["names"] == ["ingest"] and ingest["port"] == 9108 and jobs["ingest"]["metrics_path"] == "/metrics"
    assert "web" in SERVICES["web"].get("environment", {}).get("ALLOWED_HOSTS", ""), (
        "Prometheus scrapes web by that name"
    )
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in SERVICES["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus"] == "./deploy/prometheus"
    alerts = ROOT / "deploy/prometheus/alerts.yml"
    if alerts.exists():  # written by the observability work; arrives with it
        assert yaml.safe_load(alerts.read_text())["groups"]

    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090" and published(SERVICES["prometheus"]) == {
        9090
    }
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text())
    grafana_mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in SERVICES["grafana"]["volumes"]}
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert grafana_mounts[dashboards_path] == "./deploy/grafana/dashboards"
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    for dashboard in (ROOT / "deploy/grafana/dashboards").glob("*.json"):
        assert json.loads(dashboard.read_text()).get("panels"), dashboard.name
