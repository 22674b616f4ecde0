// Command go_seed_client is the benchmark's seed client in Go: the same work as the Python `seed` mode of
// bench/clients.py (parse every json_payload, ack every ack_every-th event and the last), for telling
// grpcio's per-message ceiling apart from the Python client's own cost.
//
//	go_seed_client '<json config: addr, rows, ack_every>'
//
// Same protocol as bench/clients.py: connect, print `ready`, read one line of JSON on stdin (the PIDs to
// account CPU for), subscribe, print the result as one line of JSON. A Go module of its own; package pluginpb
// is generated from proto/plugin.proto by `go generate ./...` (bench/gobuild.py does it; not committed).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	pb "walstream.bench/go_seed_client/pluginpb"
)

type config struct {
	Addr     string `json:"addr"`
	Rows     int    `json:"rows"`
	AckEvery int    `json:"ack_every"`
}

const clkTck = 100 // USER_HZ on Linux

// cpuOf is utime + stime of a process from /proc/<pid>/stat, or nil once it is gone.
func cpuOf(pid int) *float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	total := (utime + stime) / clkTck
	return &total
}

func cpus(pids map[string]int) map[string]*float64 {
	out := map[string]*float64{}
	for name, pid := range pids {
		out[name] = cpuOf(pid)
	}
	return out
}

func ownCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go_seed_client: "+format+"\n", args...)
	os.Exit(1)
}

// waitReady connects conn and waits until it is ready, or fails after timeout.
func waitReady(conn *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn.Connect()
	for state := conn.GetState(); state != connectivity.Ready; state = conn.GetState() {
		if !conn.WaitForStateChange(ctx, state) {
			return fmt.Errorf("still %s after %s", state, timeout)
		}
	}
	return nil
}

func main() {
	var cfg config
	if len(os.Args) != 2 || json.Unmarshal([]byte(os.Args[1]), &cfg) != nil || cfg.Addr == "" || cfg.Rows <= 0 {
		fail("usage: go_seed_client '{\"addr\": \"host:port\", \"rows\": N, \"ack_every\": K}'")
	}
	if cfg.AckEvery < 1 {
		cfg.AckEvery = 1
	}
	conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("bad address %s: %v", cfg.Addr, err)
	}
	defer conn.Close()
	// Connected before `ready`, so the timed part starts on an open connection.
	if err := waitReady(conn, 30*time.Second); err != nil {
		fail("cannot connect to %s: %v", cfg.Addr, err)
	}

	fmt.Println("ready")
	pids := map[string]int{}
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != "" {
		if err := json.Unmarshal([]byte(line), &pids); err != nil {
			fail("bad PID line %q: %v", line, err)
		}
	}

	cpu0, my0 := cpus(pids), ownCPU()
	t0 := time.Now()
	stream, err := pb.NewPluginServiceClient(conn).Session(context.Background())
	if err != nil {
		fail("Session: %v", err)
	}
	rows := 0
	var tFirst time.Time
	for rows < cfg.Rows {
		msg, err := stream.Recv()
		if err != nil {
			fail("after %d rows: %v", rows, err)
		}
		if tFirst.IsZero() {
			tFirst = time.Now()
		}
		var lsn uint64
		var payload string
		switch m := msg.GetMsg().(type) {
		case *pb.ServerMessage_Insert:
			lsn, payload = m.Insert.PgLsn, m.Insert.JsonPayload
		case *pb.ServerMessage_Update:
			lsn, payload = m.Update.PgLsn, m.Update.JsonPayload
		case *pb.ServerMessage_Delete:
			lsn, payload = m.Delete.PgLsn, m.Delete.JsonPayload
		case *pb.ServerMessage_Truncate:
			lsn = m.Truncate.PgLsn
		default:
			continue
		}
		if payload != "" {
			var row map[string]interface{}
			if err := json.Unmarshal([]byte(payload), &row); err != nil {
				fail("bad json_payload %q: %v", payload, err)
			}
			rows++
		}
		if rows%cfg.AckEvery == 0 || rows >= cfg.Rows {
			if err := stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Ack{Ack: &pb.ClientAck{PgLsn: lsn}}}); err != nil {
				fail("ack: %v", err)
			}
		}
	}
	seconds := time.Since(t0).Seconds()
	cpu1, my1 := cpus(pids), ownCPU()
	_ = stream.CloseSend()
	result, _ := json.Marshal(map[string]interface{}{
		"rows": rows, "events": rows, "seconds": seconds, "first_seconds": tFirst.Sub(t0).Seconds(),
		"cpu0": cpu0, "cpu1": cpu1, "client_cpu": my1 - my0,
	})
	fmt.Println(string(result))
}
