#!/bin/sh
# kafka-init (docker-compose.yml): the topics, the applications' SCRAM users and the ACLs of
# acls.txt, on the compose broker, as User:admin. Safe to run again: topics are created if
# missing, a user's credential is set anew (so a changed password in .env takes effect on
# the next `docker compose up`), and adding an ACL that exists changes nothing.
#
# It talks to the broker's own listener (SASL/PLAIN, the admin from the broker's JAAS
# configuration): the application listeners take SCRAM users only, and none exists yet the
# first time this runs.
set -eu

BIN=${KAFKA_BIN:-/opt/kafka/bin}
ACL_FILE=${ACL_FILE:-/etc/kafka-init/acls.txt}
BOOTSTRAP=${BOOTSTRAP:-kafka:9094}

fail() {
    echo "kafka-init: $*" >&2
    exit 1
}

# A password goes into a JAAS line and into kafka-configs.sh's [password=...]: quotes,
# commas, brackets or "=" would end it early, so only these characters are taken.
check_password() {
    case $2 in
        '') fail "$1 is empty (see .env.example)" ;;
        *[!A-Za-z0-9_-]*) fail "$1 may hold only letters, digits, - and _ (see .env.example)" ;;
    esac
}

# The password of a user named in acls.txt: KAFKA_<USER>_PASSWORD.
password_of() {
    case $1 in
        *[!a-z0-9]* | '') fail "user name '$1' in $ACL_FILE: lower-case letters and digits only" ;;
    esac
    var=KAFKA_$(echo "$1" | tr a-z A-Z)_PASSWORD
    eval "value=\${$var:-}" # $var is made of [A-Z0-9_] only (checked above)
    check_password "$var" "$value"
    echo "$value"
}

# A name from acls.txt with the compose names put in.
resolve() {
    case $1 in
        '$REQUEST_TOPIC'*) echo "$REQUEST_TOPIC${1#'$REQUEST_TOPIC'}" ;;
        '$RESULT_TOPIC'*) echo "$RESULT_TOPIC${1#'$RESULT_TOPIC'}" ;;
        '$INGEST_GROUP'*) echo "$INGEST_GROUP${1#'$INGEST_GROUP'}" ;;
        '$CLASSIFIER_GROUP'*) echo "$CLASSIFIER_GROUP${1#'$CLASSIFIER_GROUP'}" ;;
        '$'*) fail "unknown name $1 in $ACL_FILE" ;;
        *) echo "$1" ;;
    esac
}

: "${REQUEST_TOPIC:?}" "${RESULT_TOPIC:?}" "${INGEST_GROUP:?}" "${CLASSIFIER_GROUP:?}"
[ -r "$ACL_FILE" ] || fail "cannot read $ACL_FILE"
check_password KAFKA_ADMIN_PASSWORD "${KAFKA_ADMIN_PASSWORD:-}"

# The admin's login, readable by this process only.
umask 077
ADMIN_CONFIG=$(mktemp)
trap 'rm -f "$ADMIN_CONFIG"' EXIT
cat >"$ADMIN_CONFIG" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
EOF

# 6 partitions each: up to 6 ingest containers share the result topic; the request topic is
# keyed by lead, so a lead's messages keep their order.
for topic in "$RESULT_TOPIC" "$REQUEST_TOPIC"; do
    "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" \
        --create --if-not-exists --topic "$topic" --partitions 6 --replication-factor 1
done

# The users: admin (so an operator can log in on the host listener, 127.0.0.1:29092, which
# takes SCRAM only) and every user acls.txt names.
users=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$ACL_FILE" | awk '{ print $1 }' | sort -u)
for user in admin $users; do
    password=$(password_of "$user") || exit 1
    "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" \
        --alter --entity-type users --entity-name "$user" \
        --add-config "SCRAM-SHA-512=[password=$password]"
done

# Every ACL line. The applications' users get what acls.txt allows and nothing else.
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$ACL_FILE" | while read -r user operation type name pattern extra; do
    [ -n "$name" ] && [ -z "$extra" ] || fail "malformed line in $ACL_FILE: $user $operation $type $name $pattern $extra"
    case $type in
        topic | group) ;;
        *) fail "resource type '$type' in $ACL_FILE: topic or group" ;;
    esac
    case ${pattern:-literal} in
        literal | prefixed) ;;
        *) fail "pattern type '$pattern' in $ACL_FILE: literal or prefixed" ;;
    esac
    resource=$(resolve "$name") || exit 1
    "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" \
        --add --allow-principal "User:$user" --operation "$operation" \
        "--$type" "$resource" --resource-pattern-type "${pattern:-literal}"
done

echo "kafka-init: topics, users and ACLs in place"
