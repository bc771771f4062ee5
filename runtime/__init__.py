"""The policy runtime: contract math, ONNX bundles, export and the policy step."""
