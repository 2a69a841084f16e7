"""`swiftkit quantize`: GPTQ / AWQ (GPTQModel) and bitsandbytes exports, each verified after writing."""
