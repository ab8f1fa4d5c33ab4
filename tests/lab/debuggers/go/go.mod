module devnet.lab/hello

go 1.26
