from lowprob.cli import main

main()
