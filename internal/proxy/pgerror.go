package proxy

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes the proxy itself raises (https://www.postgresql.org/docs/15/errcodes-appendix.html).
const (
	codeTooManyConnections   = "53300" // too_many_connections: pool wait timed out, max_client_conn
	codeConnectionFailure    = "08006" // connection_failure: a server died or could not be reached
	codeCannotConnectNow     = "57P03" // cannot_connect_now: no primary / no node to route to
	codeProtocolViolation    = "08P01"
	codeQueryCanceled        = "57014"
	codeFeatureNotSupported  = "0A000"
	codeInvalidParameter     = "22023"
	codeUndefinedPrepared    = "26000" // invalid_sql_statement_name
	codeDuplicatePrepared    = "42P05"
	codeInFailedTransaction  = "25P02"
	codeAdminShutdown        = "57P01"
	codeInvalidAuthorization = "28000"
	codeInvalidPassword      = "28P01"
	codeObjectNotInState     = "55000"
	codeConfigFile           = "F0000"
	codeUndefinedObject      = "42704"
	codeSyntaxError          = "42601"
)

// pgError is an error the proxy reports to a client as an ErrorResponse.
type pgError struct {
	Severity string
	Code     string
	Message  string
	Detail   string
	Hint     string
	// File and Routine name where PostgreSQL raises the error the proxy gives in its place, for the
	// drivers that look at them (postgres.js retries on routine RevalidateCachedQuery).
	File, Routine string
}

func (e *pgError) Error() string { return fmt.Sprintf("%s (SQLSTATE %s)", e.Message, e.Code) }

func newError(code, format string, args ...any) *pgError {
	return &pgError{Severity: "ERROR", Code: code, Message: fmt.Sprintf(format, args...)}
}

// toPgError turns any error into something a client can be told. Errors from a server keep their
// SQLSTATE; anything else becomes a connection failure (08006) with the error text.
func toPgError(err error) *pgError {
	var pe *pgError
	if errors.As(err, &pe) {
		return pe
	}
	var se *pgconn.PgError
	if errors.As(err, &se) {
		return &pgError{Severity: se.Severity, Code: se.Code, Message: se.Message, Detail: se.Detail, Hint: se.Hint}
	}
	return newError(codeConnectionFailure, "%v", err)
}

// isConnectionFailure reports whether err is the proxy's own connection failure (08006): the server
// could not be reached.
func isConnectionFailure(err error) bool {
	var pe *pgError
	return errors.As(err, &pe) && pe.Code == codeConnectionFailure
}

func appendError(dst []byte, e *pgError) []byte {
	sev := e.Severity
	if sev == "" {
		sev = "ERROR"
	}
	return appendMessage(dst, &pgproto3.ErrorResponse{
		Severity: sev, SeverityUnlocalized: sev, Code: e.Code, Message: e.Message, Detail: e.Detail, Hint: e.Hint,
		File: e.File, Routine: e.Routine,
	})
}

// errorCode extracts the SQLSTATE from a raw ErrorResponse message ('C' field).
func errorCode(msg []byte) string {
	body := msg[5:]
	for len(body) > 0 && body[0] != 0 {
		field := body[0]
		var val string
		var err error
		val, body, err = cstring(body[1:])
		if err != nil {
			return ""
		}
		if field == 'C' {
			return val
		}
	}
	return ""
}
