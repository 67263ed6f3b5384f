// Package mdmbench measures MDM check-in and command round trips through
// fvescrow's embedded MDM (escrow capture on) next to bare nanomdm, on the
// same kind of storage, in the same process and run.
//
// The goal is fvescrow at 90 % or more of bare nanomdm's round trips
// per second. The benchmarks report the figures; nothing asserts the goal:
//
//	go test -run '^$' -bench . -benchtime=3s -count=3 ./bench/mdm
//
// Each benchmark is BenchmarkRoundTrip/<storage>/<command>/<mode>:
//
//   - storage: embedded (nanomdm's diskv file storage; fvescrow's SQLite and
//     age store) or postgres (nanomdm's pgsql storage; fvescrow's metadata in
//     PostgreSQL, secrets in the age store).
//   - command: ProfileList (a command fvescrow tracks and does nothing else
//     with), SecurityInfo (the answer carries the device's
//     FDE_PersonalRecoveryKeyCMS, the same blob every time, as a Mac does
//     between rotations: after the first ingest it is a duplicate), and
//     SecurityInfoNewKey (a new recovery key in every answer, as after a
//     rotation: the full escrow path).
//   - mode: serial (one device at a time) or parallel (every device of the
//     fleet at once).
//
// Each runs two servers side by side: bare nanomdm (certauth(nanomdm) behind
// the same signature extraction and certificate verification, wired as
// cmd/nanomdm does) and fvescrow (mdm.NewEmbedded with a real escrow.Service
// and Capture, mounted by the production router, api.New), each on fresh
// storage of the same kind with fleetSize freshly enrolled devices (the
// commands fvescrow queues at enrollment are answered first, so every queue
// starts empty). It runs b.N round trips on each server, alternating between
// the two in short blocks, so that both see the same conditions on a busy
// machine, with a sync(2) between blocks, so that neither pays for the
// other's dirty pages.
//
// One round trip: the admin side enqueues a command (fvescrow records it in
// its command store first, as Capture and the enqueue API do), the device
// reports Idle and gets the command, then sends its Acknowledged answer and
// gets an empty response. Requests go through real HTTP on loopback. The
// devices' Mdm-Signature values are computed before the timer starts, so the
// figures are server cost rather than the devices' RSA signing.
//
// Metrics: ns/op (one round trip on each server), bare-roundtrips/s and
// fvescrow-roundtrips/s (in serial mode the inverse of the latency, in
// parallel mode the throughput), and %bare, fvescrow's round trips per
// second as a percentage of bare's: the figure.
//
// The harness mirrors how cmd/fvescrow assembles the server (buildServer,
// openNanoStorage) and how cmd/nanomdm wires bare nanomdm; it cannot call
// them (package main), so a change there must be copied here.
//
// The postgres storage needs the PostgreSQL server pgtest uses; without it
// those benchmarks are skipped, or fail with FVESCROW_INTEGRATION=1.
package mdmbench
