"""Operations around the stream: health and reflection, Prometheus metrics, logging, TLS/auth options."""
