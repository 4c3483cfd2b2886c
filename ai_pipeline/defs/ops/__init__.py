"""Operations: declarative automation, freshness and lag, failure alerts."""
