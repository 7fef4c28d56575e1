// Package sidecar reports whether an app is in use by reading the kernel's
// TCP table, so that apps which do not serve the seed's /status document can
// still be reaped when idle.
//
// The sidecar runs next to the app in the same network namespace (a second
// container in the pod, or a process started in the app's namespace) and
// serves GET /status with a [messages.AppStatus] computed from
// /proc/net/tcp and /proc/net/tcp6. The kernel table is the only source
// that sees every client no matter what protocol the app speaks, and reading
// it needs no privileges and no cooperation from the app.
//
// # What counts as activity
//
// A socket counts as an active connection when it is ESTABLISHED and its
// local port is the app port: those are clients talking to the app. Every
// other socket is ignored for activity, deliberately:
//
//   - LISTEN on the app port does not count; it only sets listening, which
//     tells the prober that the app is up even though nobody is using it.
//   - SYN_RECV and NEW_SYN_RECV do not count: the handshake has not finished
//     and a port scan would otherwise keep a session alive.
//   - TIME_WAIT, CLOSE_WAIT, FIN_WAIT1/2, LAST_ACK and CLOSING do not count:
//     the conversation is over and the kernel is only tidying up. Counting
//     them would add up to a minute of false activity after every request.
//   - Connections on which the app is the client (remote port = app port,
//     local port something else) do not count. On loopback both ends of a
//     connection appear in the table; only the server end has the app port
//     as its local port, so each connection is counted once, and the app's
//     own outbound calls to a database or API never keep it alive.
//   - The sidecar's own traffic arrives on the sidecar's port, never the app
//     port, so polling /status cannot make the app look busy. For the same
//     reason the sidecar refuses to listen on the app port.
//
// Idle keep-alive connections from Spawner's proxy DO count: the kernel
// cannot tell an idle HTTP keep-alive connection from a WebSocket that is
// waiting for the next message, and both are ESTABLISHED. This is why
// Spawner's proxy closes idle upstream connections after a short timeout: a
// pooled connection left open would keep every session alive forever.
//
// Sockets are matched on port alone, not address, because an app commonly
// listens on 0.0.0.0 or :: and clients reach it through any address of the
// namespace. An app listening on :: receives IPv4 clients as IPv4-mapped
// IPv6 addresses in /proc/net/tcp6, which is why both tables are read.
//
// # Inactivity
//
// seconds_inactive is 0 while at least one connection counts. Otherwise it
// is the time since the first poll that saw none, or since the [Watcher]
// was created if there never was one. The resolution is the polling
// interval and the error is always towards reporting less inactivity, so a
// session is never reaped earlier than its idle timeout.
package sidecar
