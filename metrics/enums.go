package metrics

// The enumerations below are the only values their labels take, so every series exists from the
// first scrape (at 0) and the label sets are bounded. The String methods give the label values;
// accesslog writes the same words for tunnel close reasons.

// RejectReason says why a new client connection was refused before any request was read.
type RejectReason uint8

const (
	RejectMaxConns RejectReason = iota // -max-conns reached (503)
	RejectFDBudget                     // the process fd budget is spent (503)
	RejectDraining                     // the process is draining (issue 12)
	numRejectReasons
)

var rejectNames = [numRejectReasons]string{"max_conns", "fd_budget", "draining"}

func (r RejectReason) String() string { return enumName(rejectNames[:], int(r)) }

// UpstreamReason classifies a failure talking to a backend.
type UpstreamReason uint8

const (
	UpstreamRefused         UpstreamReason = iota // connect refused (502)
	UpstreamTimeout                               // connect timed out (504)
	UpstreamUnreachable                           // any other connect error: no route, host down (502)
	UpstreamReset                                 // connection reset or closed before the response ended
	UpstreamResponseTimeout                       // no response head within the response timeout (504)
	UpstreamBadResponse                           // malformed response head or framing (502)
	numUpstreamReasons
)

var upstreamNames = [numUpstreamReasons]string{"refused", "timeout", "unreachable", "reset", "response_timeout", "bad_response"}

func (r UpstreamReason) String() string { return enumName(upstreamNames[:], int(r)) }

// UpgradeResult is the outcome of one WebSocket upgrade request.
type UpgradeResult uint8

const (
	UpgradeOK            UpgradeResult = iota // verified 101, tunnel opened
	UpgradeRefused                            // the backend (or a route with websocket = false) answered something other than 101
	UpgradeBadAccept                          // a 101 that failed verification (Sec-WebSocket-Accept, Upgrade, Connection): 502
	UpgradeUpstreamError                      // no answer: connect failed, reset, timeout
	numUpgradeResults
)

var upgradeNames = [numUpgradeResults]string{"ok", "refused", "bad_accept", "upstream_error"}

func (r UpgradeResult) String() string { return enumName(upgradeNames[:], int(r)) }

// CloseReason says how a tunnel ended. The tunnel plane decides it from the first event that
// ended the tunnel.
type CloseReason uint8

const (
	CloseClient      CloseReason = iota // the client finished first (EOF) and the tunnel ended cleanly
	CloseBackend                        // the backend finished first (EOF) and the tunnel ended cleanly
	CloseReset                          // ECONNRESET/EPIPE on either socket
	CloseIdleTimeout                    // -tunnel-idle-timeout
	CloseFinTimeout                     // -tunnel-fin-timeout after one direction finished
	CloseDrain                          // wsgate closed it while draining or stopping
	CloseError                          // any other error
	numCloseReasons
)

var closeNames = [numCloseReasons]string{"client", "backend", "reset", "idle_timeout", "fin_timeout", "drain", "error"}

func (r CloseReason) String() string { return enumName(closeNames[:], int(r)) }

// Direction of tunnel bytes: Up is client to backend, Down is backend to client.
type Direction uint8

const (
	Up Direction = iota
	Down
	numDirections
)

var directionNames = [numDirections]string{"up", "down"}

func (d Direction) String() string { return enumName(directionNames[:], int(d)) }

// Phase of a client connection for wsgate_connections_active.
type Phase uint8

const (
	PhaseHTTP   Phase = iota // owned by the HTTP plane (including while a body is offloaded)
	PhaseTunnel              // an upgraded connection in the tunnel plane
	numPhases
)

var phaseNames = [numPhases]string{"http", "tunnel"}

func (p Phase) String() string { return enumName(phaseNames[:], int(p)) }

// PipeState of a splice pipe: idle in a loop's pool, or busy carrying a direction's bytes.
type PipeState uint8

const (
	PipeIdle PipeState = iota
	PipeBusy
	numPipeStates
)

var pipeNames = [numPipeStates]string{"idle", "busy"}

func (s PipeState) String() string { return enumName(pipeNames[:], int(s)) }

// ReloadResult of a configuration reload (SIGHUP, issue 12).
type ReloadResult uint8

const (
	ReloadOK ReloadResult = iota
	ReloadError
	numReloadResults
)

var reloadNames = [numReloadResults]string{"ok", "error"}

func (r ReloadResult) String() string { return enumName(reloadNames[:], int(r)) }

var codeNames = [5]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// codeClass maps a status code to its class index 0..4 (1xx..5xx). A status outside 100..599
// (which no parser in wsgate accepts) is counted as 5xx rather than lost.
func codeClass(status int) int {
	c := status/100 - 1
	if uint(c) > 4 {
		return 4
	}
	return c
}

func enumName(names []string, i int) string {
	if uint(i) < uint(len(names)) {
		return names[i]
	}
	return "invalid"
}
