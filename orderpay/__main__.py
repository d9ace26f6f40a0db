from orderpay.cli import main

main()
