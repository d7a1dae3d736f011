"""The demo and benchmark harness and the procedural sample catalogue they run on."""
