#!/bin/sh
# Checks that the running compose broker enforces deploy/kafka/acls.txt, for someone with
# Docker (CI has none; tests/unit/deploy/test_kafka_acls.py checks the file itself):
#
#   docker compose up -d && deploy/kafka/check-acls.sh
#
# Each probe runs in a fresh container of an application service (`docker compose run`), so it
# logs in with exactly the user and password that service gets. A refusal is proved by trying
# to produce and getting the broker's authorization error (anything else, even a login
# failure, fails the check); a permission by asking the broker which operations it would
# authorize on the topic, so no record is written to a topic the running services consume.
# Exits non-zero if any probe does not get the answer it expects.
set -eu
cd "$(dirname "$0")/../.."

# Runs in the application image: python, confluent-kafka and the settings of the service.
PROBE='
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from confluent_kafka import KafkaError, Producer, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient
from django.conf import settings
from whatsapp.kafka import client_config

expect = sys.argv[1]
topic = {"request": settings.KAFKA_REQUEST_TOPIC, "result": settings.KAFKA_RESULT_TOPIC}[sys.argv[2]]
who = client_config().get("sasl.username", "(no user)")
if expect == "refused":
    # Not idempotent, so the topic ACL alone decides (an idempotent producer also asks for
    # a producer id, which a user with no Write anywhere is refused with another error).
    producer = Producer(client_config(**{"acks": "all", "message.timeout.ms": 15000}))
    outcome = []
    producer.produce(topic, b"check-acls: must be refused", on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(20)
    if outcome and outcome[0] is not None and outcome[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        print(f"ok: {who} may not write {topic}")
        sys.exit(0)
    got = "no answer" if not outcome else "a delivered record" if outcome[0] is None else outcome[0].str()
    print(f"FAIL: {who} writing {topic}: expected an authorization error, got {got}")
    sys.exit(1)
described = AdminClient(client_config()).describe_topics(
    TopicCollection([topic]), request_timeout=15, include_authorized_operations=True
)[topic].result(timeout=20)
operations = set(described.authorized_operations or [])
if AclOperation.WRITE in operations and AclOperation.READ not in operations:
    print(f"ok: {who} may write {topic} (and not read it)")
    sys.exit(0)
names = sorted(operation.name for operation in operations)
print(f"FAIL: {who} on {topic}: expected Write without Read, the broker authorizes {names}")
sys.exit(1)
'

failures=0
# service, refused|writes, request|result
check() {
    out=$(docker compose run --rm --no-deps -T "$1" python -c "$PROBE" "$2" "$3" 2>&1) || true
    verdict=$(printf '%s\n' "$out" | grep -e '^ok:' -e '^FAIL:' || true)
    if [ -z "$verdict" ]; then
        verdict="FAIL: service $1 ($2, $3 topic): the probe gave no verdict; its last lines:"
        printf '%s\n' "$verdict" "$(printf '%s\n' "$out" | tail -n 5)"
    else
        printf '%s\n' "$verdict"
    fi
    case $verdict in ok:*) ;; *) failures=$((failures + 1)) ;; esac
}

check relay refused result     # the relay writes requests, never results
check ingest refused result    # ingest only reads
check web refused result       # web's monitor user only looks
check classify refused request # the classifier reads requests, never writes them
check classify writes result
check relay writes request

if [ "$failures" -ne 0 ]; then
    echo "check-acls: $failures check(s) failed" >&2
    exit 1
fi
echo "check-acls: the broker refuses and allows what deploy/kafka/acls.txt says"
