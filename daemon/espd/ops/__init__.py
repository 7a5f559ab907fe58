"""Operations: the control socket, ``show`` renderers, Prometheus metrics."""
