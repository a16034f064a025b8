"""Host side tests: unit, real gRPC over TCP+mTLS and the admin socket, crashes of the real service."""
