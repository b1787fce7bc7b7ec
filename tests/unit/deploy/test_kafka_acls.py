"""deploy/kafka/acls.txt gives each application's Kafka user what it needs and nothing more,
docker-compose.yml gives every user it names a password, and deploy/kafka/init.sh applies it.

No broker runs here: the file is parsed and its rules checked, and init.sh is run with stand-ins
for the Kafka tools that record what they were asked to do. Whether the running broker enforces
the ACLs is deploy/kafka/check-acls.sh's job, for someone with Docker."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ACLS = ROOT / "deploy/kafka/acls.txt"
INIT = ROOT / "deploy/kafka/init.sh"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
INIT_ENV: dict[str, str] = SERVICES["kafka-init"]["environment"]

# The application service each Kafka user belongs to.
USER_OF_SERVICE = {"relay": "relay", "classify": "classifier", "ingest": "ingest", "web": "monitor"}


class Acl(NamedTuple):
    user: str
    operation: str
    type: str
    name: str
    pattern: str = "literal"


def default(value: str) -> str:
    """The value compose gives "${VAR:-default}" when VAR is unset."""
    found = re.fullmatch(r"\$\{[A-Z_]+:-([^}]*)\}", value)
    assert found, value
    return found.group(1)


# What init.sh puts in for the names in acls.txt: kafka-init's variables, as compose sets them.
NAMES = {
    "$REQUEST_TOPIC": default(INIT_ENV["REQUEST_TOPIC"]),
    "$RESULT_TOPIC": default(INIT_ENV["RESULT_TOPIC"]),
    "$INGEST_GROUP": default(INIT_ENV["INGEST_GROUP"]),
    "$CLASSIFIER_GROUP": default(INIT_ENV["CLASSIFIER_GROUP"]),
}
REQUEST, RESULT = NAMES["$REQUEST_TOPIC"], NAMES["$RESULT_TOPIC"]
INGEST_GROUP, CLASSIFIER_GROUP = NAMES["$INGEST_GROUP"], NAMES["$CLASSIFIER_GROUP"]


def resolve(name: str) -> str:
    for placeholder, value in NAMES.items():
        if name.startswith(placeholder):
            return value + name[len(placeholder) :]
    assert not name.startswith("$"), f"unknown name {name}"
    return name


def parse(text: str) -> list[Acl]:
    acls = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        assert len(fields) in (4, 5), line
        user, operation, type_, name, *pattern = fields
        acls.append(Acl(user, operation, type_, resolve(name), *pattern))
    return acls


def who(acls: list[Acl], operation: str, type_: str, name: str) -> set[str]:
    """The users allowed `operation` on the resource: Read and Write imply Describe, All implies everything."""
    granting = {operation, "All"} | ({"Read", "Write"} if operation == "Describe" else set())
    return {
        acl.user
        for acl in acls
        if acl.type == type_
        and acl.operation in granting
        and (acl.name == name if acl.pattern == "literal" else name.startswith(acl.name))
    }


def problems(acls: list[Acl]) -> list[str]:
    """What is wrong with a set of ACLs, as rules about who may do what."""
    found = []

    def expect(what: str, got: set[str], wanted: set[str]) -> None:
        if got != wanted:
            found.append(f"{what}: {sorted(got)}, expected {sorted(wanted)}")

    expect(f"Write {RESULT}", who(acls, "Write", "topic", RESULT), {"classifier"})
    expect(f"Write {REQUEST}", who(acls, "Write", "topic", REQUEST), {"relay"})
    expect(f"Read {RESULT}", who(acls, "Read", "topic", RESULT), {"ingest"})
    expect(f"Read {REQUEST}", who(acls, "Read", "topic", REQUEST), {"classifier"})
    expect(f"Read group {INGEST_GROUP}", who(acls, "Read", "group", INGEST_GROUP), {"ingest"})
    expect(f"Read group {CLASSIFIER_GROUP}", who(acls, "Read", "group", CLASSIFIER_GROUP), {"classifier"})
    expect(f"Describe {RESULT}", who(acls, "Describe", "topic", RESULT), {"classifier", "ingest", "monitor"})
    expect(f"Describe group {INGEST_GROUP}", who(acls, "Describe", "group", INGEST_GROUP), {"ingest", "monitor"})
    for acl in acls:
        if acl.user == "relay" and acl.operation in {"Read", "All"}:
            found.append(f"the relay may {acl.operation} {acl.type} {acl.name}: it reads nothing")
        if acl.user == "monitor" and acl.operation != "Describe":
            found.append(f"the monitor user may {acl.operation} {acl.type} {acl.name}: it only looks")
        if acl.type not in {"topic", "group"}:
            found.append(f"{acl}: only topics and groups are granted (no cluster, transactional id, ...)")
        if acl.operation not in {"Read", "Write", "Describe"}:
            found.append(f"{acl}: only Read, Write and Describe are granted")
        if acl.name in {"*", ""} or (acl.pattern == "prefixed" and acl.name in NAMES.values()):
            found.append(f"{acl}: a wildcard, or a prefix that also matches names beyond the one meant")
        if acl.pattern not in {"literal", "prefixed"}:
            found.append(f"{acl}: unknown pattern type")
    return found


ACL_ROWS = parse(ACLS.read_text())


def test_each_user_may_do_only_its_part():
    assert ACL_ROWS, "no ACL in deploy/kafka/acls.txt"
    assert problems(ACL_ROWS) == []
    assert {acl.user for acl in ACL_ROWS} == set(USER_OF_SERVICE.values())


@pytest.mark.parametrize(
    "extra, complaint",
    [
        (Acl("relay", "Write", "topic", RESULT), f"Write {RESULT}"),
        (Acl("classifier", "Write", "topic", REQUEST), f"Write {REQUEST}"),
        (Acl("classifier", "Read", "topic", RESULT), f"Read {RESULT}"),
        (Acl("relay", "Read", "topic", REQUEST), "the relay may Read"),
        (Acl("monitor", "Read", "group", INGEST_GROUP), "the monitor user may Read"),
        (Acl("ingest", "All", "topic", "*"), "a wildcard"),
        (Acl("ingest", "Write", "topic", "ai.", "prefixed"), f"Write {RESULT}"),
        (Acl("relay", "IdempotentWrite", "cluster", "kafka-cluster"), "only topics and groups"),
    ],
)
def test_the_rules_catch_a_wrong_grant(extra, complaint):
    """The checks above fail on a file that grants too much (so a passing run means something)."""
    assert any(complaint in problem for problem in problems([*ACL_ROWS, extra])), problems([*ACL_ROWS, extra])


def test_the_rules_catch_a_missing_grant():
    without_ingest_read = [acl for acl in ACL_ROWS if (acl.user, acl.operation) != ("ingest", "Read")]
    assert any(f"Read {RESULT}" in problem for problem in problems(without_ingest_read))


def test_every_user_has_a_password_from_env_and_its_own_service():
    for service, user in USER_OF_SERVICE.items():
        env = SERVICES[service]["environment"]
        variable = f"KAFKA_{user.upper()}_PASSWORD"
        assert env["KAFKA_SASL_USERNAME"] == user, service
        assert env["KAFKA_SASL_PASSWORD"].startswith(f"${{{variable}:?"), f"{service}: required, and only from .env"
        assert INIT_ENV[variable].startswith(f"${{{variable}:?"), f"kafka-init cannot create {user}"
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT" and env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert INIT_ENV["KAFKA_ADMIN_PASSWORD"].startswith("${KAFKA_ADMIN_PASSWORD:?")
    # No other container holds a Kafka login; nobody shares one.
    holders = {name for name, s in SERVICES.items() if "KAFKA_SASL_USERNAME" in s.get("environment", {})}
    assert holders == set(USER_OF_SERVICE)
    assert "KAFKA_SASL_USERNAME" not in COMPOSE["x-app"]["environment"]
    # The topics and groups kafka-init grants are those the applications use.
    for name, variable in (("RESULT_TOPIC", "KAFKA_RESULT_TOPIC"), ("REQUEST_TOPIC", "KAFKA_REQUEST_TOPIC")):
        assert INIT_ENV[name] == COMPOSE["x-app"]["environment"][variable]
    assert INIT_ENV["INGEST_GROUP"] == COMPOSE["x-app"]["environment"]["KAFKA_GROUP_ID"]
    assert INIT_ENV["CLASSIFIER_GROUP"] == SERVICES["classify"]["environment"]["CLASSIFIER_GROUP_ID"]


def test_kafka_init_mounts_and_runs_the_script_and_the_file():
    init = SERVICES["kafka-init"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in init["volumes"])
    assert all(volume.endswith(":ro") for volume in init["volumes"])
    assert mounts["./deploy/kafka/init.sh"] == "/etc/kafka-init/init.sh"
    assert mounts["./deploy/kafka/acls.txt"] == "/etc/kafka-init/acls.txt"
    assert init["entrypoint"] == ["/bin/sh", "/etc/kafka-init/init.sh"]
    script = INIT.read_text()
    assert "ACL_FILE:-/etc/kafka-init/acls.txt" in script


@pytest.fixture
def fake_kafka(tmp_path: Path) -> tuple[Path, Path]:
    """Stand-ins for the Kafka tools: each appends its name and arguments, one per line, to a log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in ("kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh"):
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\n{{ echo "{tool}"; for a in "$@"; do echo "  $a"; done; }} >> "{log}"\n')
        path.chmod(0o755)
    return bin_dir, log


def run_init(bin_dir: Path, **env: str) -> subprocess.CompletedProcess:
    base = {
        "PATH": os.environ["PATH"],
        "KAFKA_BIN": str(bin_dir),
        "ACL_FILE": str(ACLS),
        **{
            key: default(INIT_ENV[key]) for key in ("REQUEST_TOPIC", "RESULT_TOPIC", "INGEST_GROUP", "CLASSIFIER_GROUP")
        },
        **{f"KAFKA_{user.upper()}_PASSWORD": f"{user}-secret-1" for user in ("admin", *USER_OF_SERVICE.values())},
    }
    return subprocess.run(
        [shutil.which("sh") or "/bin/sh", str(INIT)], env={**base, **env}, capture_output=True, text=True, timeout=30
    )


def calls(log: Path) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for line in log.read_text().splitlines():
        if line.startswith("  "):
            found[-1][1].append(line[2:])
        else:
            found.append((line, []))
    return found


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_init_creates_the_topics_users_and_every_acl(fake_kafka):
    bin_dir, log = fake_kafka
    result = run_init(bin_dir)
    assert result.returncode == 0, result.stderr
    made = calls(log)
    for _, args in made:  # every call logs in as admin on the broker's own listener
        assert option(args, "--bootstrap-server") == "kafka:9094" and "--command-config" in args
    topics = {option(args, "--topic") for tool, args in made if tool == "kafka-topics.sh"}
    assert topics == {REQUEST, RESULT}
    users = {
        option(args, "--entity-name"): option(args, "--add-config") for tool, args in made if tool == "kafka-configs.sh"
    }
    assert users == {user: f"SCRAM-SHA-512=[password={user}-secret-1]" for user in ("admin", *USER_OF_SERVICE.values())}
    applied = set()
    for args in (args for tool, args in made if tool == "kafka-acls.sh"):
        assert "--add" in args and "--deny-principal" not in args
        type_ = "topic" if "--topic" in args else "group"
        applied.add(
            Acl(
                option(args, "--allow-principal").removeprefix("User:"),
                option(args, "--operation"),
                type_,
                option(args, f"--{type_}"),
                option(args, "--resource-pattern-type"),
            )
        )
    assert applied == set(ACL_ROWS), "init.sh applies exactly the lines of acls.txt"


@pytest.mark.parametrize(
    "env, error",
    [
        ({"KAFKA_RELAY_PASSWORD": ""}, "KAFKA_RELAY_PASSWORD is empty"),
        ({"KAFKA_ADMIN_PASSWORD": 'x"y'}, "KAFKA_ADMIN_PASSWORD may hold only"),
        ({"KAFKA_MONITOR_PASSWORD": "a,b]"}, "KAFKA_MONITOR_PASSWORD may hold only"),
        ({"ACL_FILE": "/nonexistent/acls.txt"}, "cannot read"),
    ],
)
def test_init_refuses_missing_or_unsafe_passwords(fake_kafka, env, error):
    bin_dir, log = fake_kafka
    result = run_init(bin_dir, **env)
    assert result.returncode != 0 and error in result.stderr, result.stderr
    assert not any(tool == "kafka-acls.sh" for tool, _ in (calls(log) if log.exists() else []))
