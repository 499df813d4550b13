package directory

// The directory reaps dead nodes' connections every HeartbeatInterval with
// a membership.Reaper, the one reaper of tether. Live nodes do the same for
// each other; the directory does it too so that connections are reaped,
// and their disconnected events sent, even when every node died.
// store.ReapConns hands each connection to exactly one reaper, so racing
// is harmless.
func (s *Server) reapLoop() {
	s.reaper.Run(s.loopCtx, s.cfg.HeartbeatInterval, s.cfg.StoreTimeout)
}
