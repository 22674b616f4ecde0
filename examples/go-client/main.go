// Command go-client is the walstream example client in Go (grpc-go + protoc-gen-go stubs).
//
// It prints every change the server streams and acknowledges it. It reconnects 2 s after the
// stream ends or fails; on Ctrl-C / SIGTERM it half-closes the stream and waits for the server
// to finish the call, so the last acks are delivered, then exits.
//
// Package pluginpb holds the messages and client generated from ../../proto/plugin.proto by
// `go generate ./...` (see README.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "walstream.example/go-client/pluginpb"
)

const (
	reconnectDelay = 2 * time.Second
	shutdownGrace  = 5 * time.Second // how long to wait for the server to finish after we half-close
)

// describe returns the event's pg_lsn and the line to print for it; ok is false for an unknown kind.
func describe(msg *pb.ServerMessage) (lsn uint64, line string, ok bool) {
	switch m := msg.GetMsg().(type) {
	case *pb.ServerMessage_Insert:
		e := m.Insert
		return e.PgLsn, fmt.Sprintf("INSERT %s.%s: %s", e.Schema, e.Table, e.JsonPayload), true
	case *pb.ServerMessage_Update:
		e := m.Update
		return e.PgLsn, fmt.Sprintf("UPDATE %s.%s: %s", e.Schema, e.Table, e.JsonPayload), true
	case *pb.ServerMessage_Delete:
		e := m.Delete
		return e.PgLsn, fmt.Sprintf("DELETE %s.%s: %s", e.Schema, e.Table, e.JsonPayload), true
	case *pb.ServerMessage_Truncate:
		e := m.Truncate
		return e.PgLsn, fmt.Sprintf("TRUNCATE %s.%s", e.Schema, e.Table), true
	}
	return 0, "", false
}

// runSession handles one Session call until the server ends it, it fails, or stop is closed.
func runSession(client pb.PluginServiceClient, stop <-chan struct{}) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.Session(ctx)
	if err != nil {
		return err
	}

	// One goroutine receives; this one handles events and is the only one that sends.
	events := make(chan *pb.ServerMessage)
	finished := make(chan error, 1) // io.EOF: the server ended the call with OK
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				finished <- err
				return
			}
			select {
			case events <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()

	for {
		select {
		case msg := <-events:
			lsn, line, ok := describe(msg)
			if !ok {
				continue
			}
			fmt.Println(line) // os.Stdout is unbuffered
			// On a broken stream Send returns io.EOF; the real error then comes from Recv.
			_ = stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Ack{Ack: &pb.ClientAck{PgLsn: lsn}}})
		case err := <-finished:
			return err
		case <-stop:
			// Half-close after the acks already sent; events that still arrive are neither
			// printed nor acked (the server sends them again next time).
			_ = stream.CloseSend()
			timeout := time.After(shutdownGrace)
			for {
				select {
				case <-events:
				case err := <-finished:
					return err
				case <-timeout:
					log.Print("server did not finish the call in time; cancelling")
					return nil
				}
			}
		}
	}
}

// dialAndRun runs one session on a fresh connection. (A connection that failed to connect backs
// off on its own, up to minutes, failing calls meanwhile; a new one per attempt keeps the
// reconnect delay at reconnectDelay.)
func dialAndRun(addr string, stop <-chan struct{}) error {
	// Plaintext, as the server listens without TLS. grpc.NewClient does not connect yet: the
	// Session call below does, and fails if the server is not there.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	return runSession(pb.NewPluginServiceClient(conn), stop)
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("[go-client] ")
	addr := os.Getenv("WALSTREAM_ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}

	stop := make(chan struct{})
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		name := map[os.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM"}[<-signals]
		log.Printf("got %s, flushing acks and exiting", name)
		close(stop)
	}()

	for {
		log.Printf("connecting to %s", addr)
		err := dialAndRun(addr, stop)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			log.Print("stream ended by server")
		default:
			log.Printf("stream failed: %v", err)
		}
		select {
		case <-stop:
			log.Print("bye")
			return
		case <-time.After(reconnectDelay):
		}
	}
}
