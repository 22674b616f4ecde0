# DO NOT EDIT: generated from proto/*.proto by scripts/gen_proto.py (make proto).
