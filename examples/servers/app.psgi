# A PSGI app for Starlet and Starman under `pyboss start-server` (README: "Running
# popular servers"). GET / answers {"generation": N, "pid": P}.
my $generation = $ENV{SERVER_STARTER_GENERATION} || 0;

sub {
    my $body = sprintf('{"generation": %d, "pid": %d}', $generation, $$);
    return [200, ['Content-Type' => 'application/json',
                  'Content-Length' => length $body], [$body]];
};
