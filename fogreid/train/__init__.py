"""Training and evaluation of the joint defog + ReID network (`fogreid train`, `fogreid eval`)."""
