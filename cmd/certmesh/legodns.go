package main

import "github.com/go-acme/lego/v4/providers/dns"

// legoDNSByName is every DNS provider lego knows, by the name lego gives it
// (route53, cloudflare, gcloud, …). Only the binary links them.
var legoDNSByName = dns.NewDNSChallengeProviderByName
