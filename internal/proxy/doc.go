// Package proxy is `meridian proxy`: a PostgreSQL wire-protocol proxy that applications connect to
// instead of PostgreSQL. It pools server connections, sends each read to a replica in its own region
// (else the nearest other replica, else the primary) and each write to the primary, wherever it is.
//
// Main types: [Proxy] (listener, client sessions, pools, discovery, metrics), [Config] (YAML), and
// [Discovery], behind which the role of each node is found — by polling here, by the etcd topology
// once the control plane exists.
//
// Protocol handling follows https://www.postgresql.org/docs/15/protocol-flow.html: startup (SSL and
// GSS encryption requests are declined, cancel requests honoured), the simple query protocol, the
// extended protocol with pipelining, COPY in both directions, notices and ParameterStatus. Server
// connections are opened and authenticated with pgconn and then driven as raw sockets; messages are
// relayed without decoding except where the proxy must understand or rewrite them.
//
// In transaction pooling mode a client holds a server connection from the first statement of a
// transaction to the ReadyForQuery that ends it. Prepared statements are re-prepared transparently on
// whichever server connection a client lands on, under internal names derived from the statement
// text; SET state is tracked and replayed; features that cannot be multiplexed (LISTEN, session
// advisory locks, WITH HOLD cursors, temporary tables, SQL-level PREPARE) pin the client to one
// server connection.
package proxy
