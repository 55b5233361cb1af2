"""flowmo: FlowMo image tokenizers."""
