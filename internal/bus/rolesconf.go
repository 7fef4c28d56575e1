package bus

import (
	"fmt"
	"strings"

	"github.com/spawnerhq/spawner/messages"
)

// RolesConfig renders a nats-server configuration for an external NATS:
// JetStream, and an account whose users are the roles, each with the
// permissions Permissions gives it. A role's password comes from the
// server's environment, SPAWNER_NATS_<ROLE>_PASSWORD, so the file holds no
// secret. deploy/nats/nats.conf is its output for the default prefix.
func RolesConfig(subj messages.Subjects) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, `# Spawner's NATS roles for an external nats-server (prefix %q). Generated
# from internal/bus/roles.go; TestShippedNATSConfig keeps it in step.
#
# Each role's password comes from this server's environment:
#   SPAWNER_NATS_<ROLE>_PASSWORD, e.g. SPAWNER_NATS_GATEWAY_PASSWORD.
# Each component connects with SPAWNER_NATS_USER=<role> and its password in
# SPAWNER_NATS_PASSWORD; people use the client or ops role.
port: 4222
jetstream {
  store_dir: /data
}
accounts {
  SPAWNER {
    jetstream: enabled
    users: [
`, subj.Prefix())
	for _, role := range Roles {
		p, err := Permissions(subj, role)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "      {\n        user: %s\n        password: $SPAWNER_NATS_%s_PASSWORD\n        permissions: {\n",
			role, strings.ToUpper(role))
		fmt.Fprintf(&b, "          publish: { allow: %s }\n", confList(p.Publish.Allow))
		fmt.Fprintf(&b, "          subscribe: { allow: %s", confList(p.Subscribe.Allow))
		if len(p.Subscribe.Deny) > 0 {
			fmt.Fprintf(&b, ", deny: %s", confList(p.Subscribe.Deny))
		}
		b.WriteString(" }\n")
		if p.Response != nil {
			fmt.Fprintf(&b, "          allow_responses: { max: %d, expires: \"%s\" }\n", p.Response.MaxMsgs, p.Response.Expires)
		}
		b.WriteString("        }\n      }\n")
	}
	b.WriteString("    ]\n  }\n}\n")
	return b.String(), nil
}

func confList(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = `"` + s + `"`
	}
	return "[" + strings.Join(q, ", ") + "]"
}
